package producer_test

import (
	"context"
	"fmt"
	"os"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

// A service changes a customer's tier and publishes the customer's new
// full state in the same transaction: the event commits or rolls back with
// the change. The relay then publishes it from the outbox.
func Example() {
	// ecst.yaml in the working directory, and ECST_* variables that point
	// at a database, a broker and a registry, as a deployed service has.
	world := ecsttest.NewExample()
	defer world.Close()
	world.Exec(`INSERT INTO customers (id, version, name, email) VALUES ('cust-42', 1, 'Ada Lovelace', 'ada@example.com')`)

	if err := run(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	printOutbox(world.Pool)
	// Output:
	// outbox: cust-42 customer.upserted version 2, tier gold
}

// run is a service's start, then one change.
func run(ctx context.Context) error {
	cfg, err := config.Load("ecst.yaml", os.Getenv) // entities, topics, schemas
	if err != nil {
		return err
	}
	if err := cfg.Finish(); err != nil { // defaults and validation: every error names the setting and the fix
		return err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()
	pub, err := producer.FromConfig(cfg, reg)
	if err != nil {
		return err
	}
	if err := pub.Resolve(ctx); err != nil { // fail at start if a schema is not registered
		return err
	}
	pool, err := cfg.Database.Connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()

	return setTier(ctx, pool, pub, "cust-42", "gold")
}

// setTier changes the customer's row and publishes its new state, in one
// transaction.
func setTier(ctx context.Context, pool *pgxpool.Pool, pub *producer.Publisher, id, tier string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var c customers.Customer
		if err := tx.QueryRow(ctx, `UPDATE customers SET tier = $2, version = version + 1
			WHERE id = $1 RETURNING id, version, name, email, tier, updated_at`, id, tier).
			Scan(&c.ID, &c.Version, &c.Name, &c.Email, &c.Tier, &c.UpdatedAt); err != nil {
			return err
		}
		return pub.Publish(ctx, tx, "customer", c.ID, c.Version, &c) // or a map[string]any
	})
}

// printOutbox shows the rows waiting in the outbox: key, headers, state.
func printOutbox(pool *pgxpool.Pool) {
	ctx := context.Background()
	rows, err := pool.Query(ctx, "SELECT key, value, headers FROM ecst.outbox ORDER BY id")
	if err != nil {
		fmt.Println(err)
		return
	}
	type row struct {
		Key            string
		Value, Headers []byte
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		fmt.Println(err)
		return
	}
	schema, err := schemas.Parse(customers.Schema)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range all {
		hs, err := outbox.DecodeHeaders(r.Headers)
		if err != nil {
			fmt.Println(err)
			return
		}
		h := map[string]string{}
		for _, x := range hs {
			h[x.Key] = string(x.Value)
		}
		_, payload, err := schemas.DecodeWire(r.Value)
		if err != nil {
			fmt.Println(err)
			return
		}
		var c customers.Customer
		if err := avro.Unmarshal(schema, payload, &c); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("outbox: %s %s version %s, tier %s\n", r.Key, h[producer.HeaderEventType], h[producer.HeaderEntityVersion], *c.Tier)
	}
}
