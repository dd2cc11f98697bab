package consumer_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/schemas"
)

// A service keeps a read model of the customers other services publish:
// it replays the topic from offset 0 into memory, and serves reads once it
// has caught up.
func Example() {
	// ecst.yaml in the working directory, ECST_* variables pointing at a
	// broker and a registry, and a customer published on the topic.
	world := ecsttest.NewExample()
	defer world.Close()
	world.Customer("cust-42", "Ada Lovelace", "ada@example.com", "gold")
	world.Drain()

	if err := readModel(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// cust-42: Ada Lovelace <ada@example.com>, tier gold
}

// readModel replays the customer topic into a memory model and reads one
// customer from it.
func readModel(ctx context.Context) error {
	cfg, err := config.Load("ecst.yaml", os.Getenv)
	if err != nil {
		return err
	}
	if err := cfg.Finish(); err != nil {
		return err
	}
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()

	model := consumer.NewMemory[customers.Customer]()
	c, err := consumer.New(consumer.Config[customers.Customer]{
		Name: "billing", Topic: cfg.Entities["customer"].Topic, KafkaOpts: kopts, Registry: reg,
		ReaderSchema: customers.Schema, Store: model,
	})
	if err != nil {
		return err
	}
	model.Bind(c.Ready) // reads return ErrNotReady until caught up
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan error, 1)
	go func() {
		stopped <- c.Run(ctx) // until ctx ends, or a fatal error (a poison record under the default Halt)
		cancel()              // a consumer that stopped ends the wait below
	}()
	if err := c.WaitReady(ctx); err != nil { // caught up with the topic as it was at start
		if runErr := <-stopped; runErr != nil {
			return runErr
		}
		return err
	}
	cust, ok, err := model.Get("cust-42")
	if err != nil || !ok {
		return fmt.Errorf("cust-42: found %v, %v", ok, err)
	}
	fmt.Printf("%s: %s <%s>, tier %s\n", cust.ID, cust.Name, cust.Email, *cust.Tier)
	cancel()
	return <-stopped
}
