package republish_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
)

// Rows changed behind the producer's back (a backfill, a hot fix by hand)
// reach no consumer. A forced republish writes every key's current state
// from the source table to the outbox, and tombstones the keys the topic
// still has but the source no longer does; the relay publishes them.
func Example() {
	// ecst.yaml in the working directory, ECST_* variables pointing at a
	// database, a broker and a registry.
	world := ecsttest.NewExample()
	defer world.Close()
	world.Customer("cust-1", "Ada Lovelace", "ada@example.com", "gold") // published
	world.Drain()
	world.Exec(`DELETE FROM customers WHERE id = 'cust-1'`) // by hand: no tombstone
	world.Exec(`INSERT INTO customers (id, version, name, email) VALUES
		('cust-2', 1, 'Grace Hopper', 'grace@example.com'),
		('cust-3', 1, 'Edsger Dijkstra', 'edsger@example.com')`) // a backfill: no events

	res, err := republishAll(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("run %d: %d keys selected, %d states written; %d orphan, %d tombstone\n",
		res.RunID, res.Selected, res.Written, res.Orphans, res.Tombstones)
	// Output:
	// run 1: 2 keys selected, 2 states written; 1 orphan, 1 tombstone
}

// republishAll is `ecst republish customer --all --tombstone-orphans`, from
// Go: a service can offer it on its admin endpoint.
func republishAll(ctx context.Context) (*republish.Result, error) {
	cfg, err := config.Load("ecst.yaml", os.Getenv)
	if err != nil {
		return nil, err
	}
	if err := cfg.Finish(); err != nil {
		return nil, err
	}
	kopts, err := kafkaopts.Client(cfg.Kafka) // the orphans are found on the topic
	if err != nil {
		return nil, err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	pub, err := producer.FromConfig(cfg, reg)
	if err != nil {
		return nil, err
	}
	pool, err := cfg.Database.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer pool.Close()

	return republish.Run(ctx,
		republish.Config{Pool: pool, Publisher: pub, Entity: cfg.Entities["customer"], Kafka: kopts},
		republish.Options{All: true, TombstoneOrphans: true})
}
