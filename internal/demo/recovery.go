package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/customers"
	"github.com/ecst-io/ecst/internal/topics"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
	"github.com/ecst-io/ecst/verify"
)

const billingTable = "billing_customers"

// recoveryStory is the second half: relay, consume, break, detect, repair.
func recoveryStory(ctx context.Context, n *narrator, cfg *config.Config, pool *pgxpool.Pool, pub *producer.Publisher, reg *schemas.Registry, report Report) error {
	entity := cfg.Entities["customer"]
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return err
	}

	n.step("ecst topics apply, then ecst relay: the outbox goes to the compacted topic")
	if err := createTopic(ctx, kopts, entity); err != nil {
		return err
	}
	relay, err := relay.New(relay.Config{Pool: pool, KafkaOpts: kopts, Service: cfg.Service, Topics: []string{entity.Topic},
		PollMin: time.Millisecond, PollMax: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
	}()
	if err := waitOutboxEmpty(ctx, pool); err != nil {
		return err
	}
	n.say("Topic %s (cleanup.policy=compact, %d partitions) holds the 4 events; the outbox is empty again.", entity.Topic, entity.Partitions)
	n.say("The relay keeps running: it publishes every new outbox row within milliseconds, in order per key.")

	n.step("Two consumers build read models by replaying the topic from offset 0")
	stopMirror, err := startMirror(ctx, pool, reg, entity, kopts)
	if err != nil {
		return err
	}
	defer stopMirror()
	rows, err := countRows(ctx, pool, billingTable)
	if err != nil {
		return err
	}
	n.say("billing keeps a Postgres table, %s (what 'ecst mirror customer --table %s' does): %d customers.", billingTable, billingTable, rows)
	support, stopSupport, err := startMemoryModel(ctx, reg, entity, kopts)
	if err != nil {
		return err
	}
	n.say("support keeps its model in memory (consumer.Memory): ready with %d customers.", support.Len())
	n.say("Both saw cust-3's tombstone and hold only cust-1 and cust-2.")

	n.step("Things go wrong, as they do")
	if _, err := pool.Exec(ctx, `UPDATE `+billingTable+` SET email = 'typo@exampel.com' WHERE _key = 'cust-1'`); err != nil {
		return err
	}
	n.say("Someone 'fixes' billing's table by hand: UPDATE %s SET email = 'typo@exampel.com' WHERE _key = 'cust-1'.", billingTable)
	if _, err := pool.Exec(ctx, `DELETE FROM `+billingTable+` WHERE _key = 'cust-2'`); err != nil {
		return err
	}
	n.say("And deletes a row it should not have: DELETE FROM %s WHERE _key = 'cust-2'.", billingTable)
	if _, err := pool.Exec(ctx, `UPDATE customers SET tier = 'platinum', version = version + 1 WHERE id = 'cust-1'`); err != nil {
		return err
	}
	n.say("An operator hot-fixes the source table directly, bypassing the service (no event): cust-1's tier is now platinum.")
	stopSupport()
	support, stopSupport, err = startMemoryModel(ctx, reg, entity, kopts)
	if err != nil {
		return err
	}
	defer stopSupport()
	c, _, _ := support.Get("cust-1")
	n.say("support restarts and loses its memory: it rebuilds from the topic, and sees cust-1's tier as %v, not platinum.", c["tier"])

	n.step("ecst verify customer --mirror " + billingTable + ": compare source ⇄ topic ⇄ read model")
	vcfg := verify.Config{Pool: pool, Registry: reg, Entity: entity, Kafka: kopts, Publisher: pub}
	rep, err := verify.Run(ctx, vcfg, verify.Options{Mirror: billingTable})
	if err != nil {
		return err
	}
	report(n.indented(), rep)
	if rep.InSync() || rep.Stale != 1 || rep.Mirror == nil || rep.Mirror.Missing != 1 || rep.Mirror.Stale != 1 {
		return fmt.Errorf("verify did not find the drift the demo made: %+v", rep)
	}
	n.say("Exactly the three problems: cust-1 stale on the topic (the hot-fix published nothing), and in billing's")
	n.say("table cust-1 stale and cust-2 missing. Content hashes, not versions: nothing is taken on trust.")

	// The repair verify suggests, as it says: the relay and billing's
	// mirror are running.
	n.step("ecst verify customer --mirror " + billingTable + " --repair: republish exactly the drifted keys")
	rep, err = verify.Run(ctx, vcfg, verify.Options{Mirror: billingTable, Repair: true})
	if err != nil {
		return err
	}
	report(n.indented(), rep)
	if !rep.InSync() || rep.Repair == nil || rep.Repair.Republished != 2 {
		return fmt.Errorf("not converged after the repair: %+v", rep)
	}
	n.say("Run %d wrote the current state of cust-1 and cust-2 to the outbox, each key under its lock, tagged",
		rep.Repair.RunID)
	n.say("ecst-republish: %d; the relay published them, billing's table applied them like any other change,", rep.Repair.RunID)
	n.say("and verify, run again, found none.")
	if err := waitFor(ctx, func() bool { c, _, _ := support.Get("cust-1"); return c["tier"] == "platinum" }); err != nil {
		return fmt.Errorf("support's model did not converge: %w", err)
	}
	c, _, _ = support.Get("cust-1")
	n.say("Source, topic, billing's table and support's memory agree: cust-1 is %v, cust-2 is back.", c["tier"])
	n.say("When the drift is too wide to list (a source restored from a backup), 'ecst republish customer --all")
	n.say("--tombstone-orphans' writes every key's state the same way, and tombstones the keys the source lost.")
	n.done()
	return nil
}

func createTopic(ctx context.Context, kopts []kgo.Opt, e *config.Entity) error {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	return topics.Create(ctx, kadm.NewClient(cl), e)
}

// startMirror runs billing's mirror, as `ecst mirror customer --table
// billing_customers` does, until stop; it returns once the mirror has
// caught up.
func startMirror(ctx context.Context, pool *pgxpool.Pool, reg *schemas.Registry, e *config.Entity, kopts []kgo.Opt) (stop func(), err error) {
	schema, err := schemas.Parse(customers.Schema)
	if err != nil {
		return nil, err
	}
	m, err := consumer.NewMirror(schema)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, m.CreateTable(billingTable)); err != nil {
		return nil, err
	}
	c, err := consumer.New(consumer.Config[map[string]any]{Name: "mirror:" + billingTable, Topic: e.Topic, KafkaOpts: kopts, Registry: reg,
		Store: &consumer.Postgres[map[string]any]{Pool: pool, Table: billingTable, Projection: m}})
	if err != nil {
		return nil, err
	}
	return run(ctx, c)
}

// run runs c until stop, once it is ready.
func run(ctx context.Context, c *consumer.Consumer[map[string]any]) (stop func(), err error) {
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	stop = func() { cancel(); <-done }
	if err := c.WaitReady(ctx); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

func startMemoryModel(ctx context.Context, reg *schemas.Registry, e *config.Entity, kopts []kgo.Opt) (*consumer.Memory[map[string]any], func(), error) {
	store := consumer.NewMemory[map[string]any]()
	c, err := consumer.New(consumer.Config[map[string]any]{Name: "support", Topic: e.Topic, KafkaOpts: kopts, Registry: reg, Store: store})
	if err != nil {
		return nil, nil, err
	}
	stop, err := run(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	return store, stop, nil
}

func waitOutboxEmpty(ctx context.Context, pool *pgxpool.Pool) error {
	return waitFor(ctx, func() bool {
		n, err := countOutbox(ctx, pool)
		return err == nil && n == 0
	})
}

func waitFor(ctx context.Context, ok func() bool) error {
	return wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "the demo's step", func() (bool, error) { return ok(), nil })
}

func countRows(ctx context.Context, pool *pgxpool.Pool, table string) (int, error) {
	var n int
	err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	return n, err
}

// indented writes through the narrator's indentation.
func (n *narrator) indented() io.Writer { return indentWriter{n.w} }

type indentWriter struct{ w io.Writer }

func (i indentWriter) Write(p []byte) (int, error) {
	s := strings.ReplaceAll(strings.TrimSuffix(string(p), "\n"), "\n", "\n   ")
	_, err := fmt.Fprint(i.w, "   "+s+"\n")
	return len(p), err
}
