package devstack_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/devstack"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	topic    = "customers.state"
	subject  = topic + "-value"
	group    = "customers-view"
	txnID    = "ecst-relay.devstack-test.0"
	schemaV1 = `{"type":"record","name":"Customer","fields":[{"name":"id","type":"string"},{"name":"tier","type":"string"}]}`
	schemaV2 = `{"type":"record","name":"Customer","fields":[{"name":"id","type":"string"},{"name":"tier","type":"string"},{"name":"email","type":["null","string"],"default":null}]}`
)

// TestRestartKeepsEverything is the promise of ecst dev --data-dir: stop it,
// start it again on the same directory and ports, and the topic, its
// records (written in a Kafka transaction), the group's committed offset,
// the schema ids the records carry and the database rows are all there.
func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := devstack.Options{
		DataDir:      filepath.Join(testkit.OpenTempDir(t), "dev"),
		KafkaPort:    testkit.FreePort(t),
		RegistryPort: testkit.FreePort(t),
		PostgresPort: testkit.FreePort(t),
	}
	st := start(t, opts)

	// Registry: two schemas, so the ids are 1 and 2 and a restarted
	// registry that started counting again would be caught.
	reg := registry(t, st)
	other, err := reg.Register(ctx, "other-value", schemaV2)
	if err != nil {
		t.Fatal(err)
	}
	id, err := reg.Register(ctx, subject, schemaV1)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetCompatibility(ctx, subject, "FULL_TRANSITIVE"); err != nil {
		t.Fatal(err)
	}

	adm := admin(t, st)
	cleanup := "compact"
	if _, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"cleanup.policy": &cleanup}, topic); err != nil {
		t.Fatal(err)
	}
	value := map[string]any{"id": "c-1", "tier": "gold"}
	produceTx(t, st, id, value)
	var commit kadm.Offsets
	commit.Add(kadm.Offset{Topic: topic, Partition: partitionOf(t, st), At: 1, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, group, commit); err != nil {
		t.Fatal(err)
	}

	db := connect(t, st)
	if _, err := db.Exec(ctx, "CREATE TABLE customers (id text PRIMARY KEY, tier text); INSERT INTO customers VALUES ('c-1', 'gold')"); err != nil {
		t.Fatal(err)
	}
	db.Close(ctx)
	before := st.Env()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The process could die in the middle of a journal write: the torn
	// line must not stop the next start.
	f, err := os.OpenFile(filepath.Join(opts.DataDir, "registry", "journal.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"method":"POST","uri":"/subj`)
	f.Close()

	st = start(t, opts)
	if !reflect.DeepEqual(st.Env(), before) {
		t.Errorf("settings changed across the restart:\n before %v\n after  %v", before, st.Env())
	}
	adm = admin(t, st)
	reg = registry(t, st)

	// The topic, with its config.
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rc.On(topic, nil)
	if err != nil {
		t.Fatalf("topic %s after restart: %v", topic, err)
	}
	var policy string
	for _, kv := range c.Configs {
		if kv.Key == "cleanup.policy" && kv.Value != nil {
			policy = *kv.Value
		}
	}
	if policy != "compact" {
		t.Errorf("cleanup.policy after restart = %q", policy)
	}

	// The committed offset.
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(topic, partitionOf(t, st)); !ok || o.At != 1 {
		t.Errorf("group %s offset after restart: %+v (found %v), want 1", group, o, ok)
	}

	// The committed record, which still decodes with the id it carries.
	recs := consumeAll(t, st, 1)
	gotID, payload, err := schemas.DecodeWire(recs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := reg.SchemaByID(ctx, gotID)
	if err != nil {
		t.Fatalf("the record's schema id %d after restart: %v", gotID, err)
	}
	got, err := schemas.DecodeAny(sch, payload)
	if err != nil || !reflect.DeepEqual(got, value) {
		t.Errorf("record after restart decodes to %v (%v), want %v", got, err, value)
	}

	// The registry goes on where it was: same ids, the next id is new,
	// the subject's compatibility is kept.
	if again, err := reg.Register(ctx, subject, schemaV1); err != nil || again != id {
		t.Errorf("re-registering gave id %d (%v), want %d", again, err, id)
	}
	if again, err := reg.Lookup(ctx, "other-value", schemaV2); err != nil || again != other {
		t.Errorf("lookup in other-value gave id %d (%v), want %d", again, err, other)
	}
	if next, err := reg.Register(ctx, subject, schemaV2); err != nil || next != other {
		t.Errorf("registering schema 2 under %s gave id %d (%v), want the existing id %d", subject, next, err, other)
	}
	if lvl, err := reg.Compatibility(ctx, subject); err != nil || lvl != "FULL_TRANSITIVE" {
		t.Errorf("compatibility after restart = %q (%v)", lvl, err)
	}

	// The transactional id still works: its producer id is known and the
	// new session fences the old one.
	produceTx(t, st, id, map[string]any{"id": "c-1", "tier": "platinum"})
	if recs := consumeAll(t, st, 2); string(recs[1].Key) != "c-1" {
		t.Errorf("second record key %q", recs[1].Key)
	}

	db = connect(t, st)
	defer db.Close(ctx)
	var tier string
	if err := db.QueryRow(ctx, "SELECT tier FROM customers WHERE id = 'c-1'").Scan(&tier); err != nil || tier != "gold" {
		t.Errorf("row after restart: %q, %v", tier, err)
	}
}

// TestThrowawayLeavesNothing: without a data directory, Close stops the
// server and removes its files.
func TestThrowawayLeavesNothing(t *testing.T) {
	t.Parallel()
	st, err := devstack.Start(context.Background(), devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.DataDir() != "" {
		t.Errorf("DataDir = %q, want none", st.DataDir())
	}
	pid, dir := st.Postgres.PID(), st.Postgres.Dir()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("postmaster %d still running after Close", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind (%v)", dir, err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPortInUse(t *testing.T) {
	t.Parallel()
	taken := testkit.BusyPort(t)
	for _, tc := range []struct {
		service string
		opts    devstack.Options
	}{
		{"kafka", devstack.Options{KafkaPort: taken}},
		{"registry", devstack.Options{RegistryPort: taken}},
		{"postgres", devstack.Options{PostgresPort: taken}},
	} {
		start := time.Now()
		_, err := devstack.Start(context.Background(), tc.opts)
		var pe *devstack.PortInUseError
		if !errors.As(err, &pe) || pe.Service != tc.service || pe.Port != taken {
			t.Errorf("%s port taken: err = %v, want a PortInUseError for %s", tc.service, err, tc.service)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s port taken: took %v to say so", tc.service, d)
		}
	}
}

func TestDataDirGuards(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testkit.OpenTempDir(t), "dev")
	st := start(t, devstack.Options{DataDir: dir})
	if _, err := devstack.Start(context.Background(), devstack.Options{DataDir: dir}); !errors.Is(err, devstack.ErrDataDirInUse) {
		t.Errorf("second stack on %s: err = %v, want ErrDataDirInUse", dir, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	foreign := testkit.OpenTempDir(t)
	if err := os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := devstack.Start(context.Background(), devstack.Options{DataDir: foreign}); err == nil {
		t.Errorf("a stack started in a non-empty directory that is not a data directory")
	}
}

func start(t *testing.T, opts devstack.Options) *devstack.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func registry(t *testing.T, st *devstack.Stack) *schemas.Registry {
	t.Helper()
	reg, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(st.RegistryURL)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}

func admin(t *testing.T, st *devstack.Stack) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(st.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func connect(t *testing.T, st *devstack.Stack) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), st.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// partitionOf is where key c-1 lands: read back from the topic rather
// than recomputing the partitioner.
func partitionOf(t *testing.T, st *devstack.Stack) int32 {
	t.Helper()
	return consumeAll(t, st, 1)[0].Partition
}

// produceTx writes one record in a committed Kafka transaction, as the
// relay does.
func produceTx(t *testing.T, st *devstack.Stack, id int, value map[string]any) {
	t.Helper()
	ctx := context.Background()
	sch, err := schemas.Parse(schemaV1)
	if err != nil {
		t.Fatal(err)
	}
	body, err := avro.Marshal(sch, value)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(st.Brokers...), kgo.TransactionalID(txnID), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Key: []byte(value["id"].(string)), Value: schemas.AppendWire(nil, id)}
	rec.Value = append(rec.Value, body...)
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

// consumeAll reads n committed records from the start of the topic.
func consumeAll(t *testing.T, st *devstack.Stack, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(st.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(recs), n, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// TestJournalMismatchRefused: a journal whose ids the registry would not
// give again (edited, or from another registry) must stop the start, not
// hand records wrong schemas.
func TestJournalMismatchRefused(t *testing.T) {
	t.Parallel()
	dir := testkit.OpenTempDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "registry"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ecst-dev.lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	line := `{"method":"POST","uri":"/subjects/s-value/versions","body":"{\"schema\":\"\\\"string\\\"\"}","status":200,"response":"{\"id\":5}\n"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "registry", "journal.jsonl"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := devstack.Start(context.Background(), devstack.Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "recorded schema id 5") {
		t.Fatalf("err = %v, want a refusal naming the recorded id", err)
	}
}
