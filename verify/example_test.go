package verify_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
	"github.com/ecst-io/ecst/verify"
)

// A hot fix by hand changed a customer's row and published nothing: verify
// finds the key stale on the topic, field by field. With Repair, it
// republishes the drifted keys, waits for the relay to publish them, and
// verifies again.
func Example() {
	// ecst.yaml in the working directory, ECST_* variables pointing at a
	// database, a broker and a registry; two customers published.
	world := ecsttest.NewExample()
	defer world.Close()
	world.Customer("cust-1", "Ada Lovelace", "ada@example.com", "gold")
	world.Customer("cust-2", "Grace Hopper", "grace@example.com", "")
	world.Drain()
	// A hot fix by hand: no event.
	world.Exec(`UPDATE customers SET tier = 'gold', version = version + 1 WHERE id = 'cust-2'`)
	stopRelay := world.StartRelay() // a repair needs a relay running
	defer stopRelay()

	ctx := context.Background()
	report, err := check(ctx, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d keys: %d missing, %d extra, %d stale %v\n",
		report.SourceKeys, report.Missing, report.Extra, report.Stale, report.Samples.Stale)
	for _, d := range report.Diffs {
		for _, f := range d.Fields {
			fmt.Printf("  %s %s: source %v, topic %v\n", d.Key, f.Field, f.Want, f.Got)
		}
	}

	report, err = check(ctx, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("repair: %d key republished; in sync after it: %v\n", report.Repair.Republished, report.InSync())
	// Output:
	// 2 keys: 0 missing, 0 extra, 1 stale [cust-2]
	//   cust-2 version: source 2, topic 1
	//   cust-2 tier: source gold, topic <nil>
	// repair: 1 key republished; in sync after it: true
}

// check is `ecst verify customer` (with --repair), from Go: a service can
// offer it on its admin endpoint.
func check(ctx context.Context, repair bool) (*verify.Report, error) {
	cfg, err := config.Load("ecst.yaml", os.Getenv)
	if err != nil {
		return nil, err
	}
	if err := cfg.Finish(); err != nil {
		return nil, err
	}
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	pub, err := producer.FromConfig(cfg, reg) // a repair writes through the producer
	if err != nil {
		return nil, err
	}
	pool, err := cfg.Database.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer pool.Close()

	return verify.Run(ctx,
		verify.Config{Pool: pool, Registry: reg, Entity: cfg.Entities["customer"], Kafka: kopts, Publisher: pub},
		verify.Options{Repair: repair})
}
