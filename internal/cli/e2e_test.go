package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

// TestWriteRelayMirrorTailRebuild drives the whole path through the CLI:
// schema register, topics apply, a service's writes, relay --drain,
// mirror --once, tail, rebuild.
func TestWriteRelayMirrorTailRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := kafkatest.New(t)
	fake := srfake.New()
	defer fake.Close()
	dbURL := newMigratedDB(t)
	topic := fmt.Sprintf("cli-e2e-%d", time.Now().UnixNano())
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "schemas"), 0o755)
	os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(customers.Schema), 0o644)
	cfgPath := filepath.Join(dir, "ecst.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("service: e2e\nentities:\n  customer:\n    topic: %s\n    schema: schemas/customer.avsc\n    partitions: 3\n    replication_factor: 1\n", topic)), 0o644)
	env := map[string]string{"ECST_BROKERS": strings.Join(b.Seeds, ","), "ECST_DATABASE_URL": dbURL,
		"ECST_SCHEMA_REGISTRY_URL": fake.URL(), "ECST_METRICS_ADDR": "off"}
	must := func(args ...string) result {
		t.Helper()
		r := run(t, env, append([]string{"--config", cfgPath}, args...)...)
		if r.code != 0 {
			t.Fatalf("ecst %v: code %d\n%s%s", args, r.code, r.out, r.err)
		}
		return r
	}
	must("schema", "register")
	must("topics", "apply")

	// The customers service writes 50 customers, updates some, deletes two.
	cfg, err := config.Load(cfgPath, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	pub, err := producer.FromConfig(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tier := "gold"
	write := func(id string, version int64) {
		c := customers.Customer{ID: id, Version: version, Name: "name-" + id, Email: id + "@x", Tier: &tier, UpdatedAt: time.Now().UTC().Truncate(time.Microsecond)}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return pub.Publish(ctx, tx, "customer", id, version, &c) }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		write(fmt.Sprintf("c%02d", i), 1)
	}
	write("c07", 2)
	for _, id := range []string{"c01", "c02"} {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return pub.Delete(ctx, tx, "customer", id, 2) }); err != nil {
			t.Fatal(err)
		}
	}
	must("relay", "--drain")

	r := must("mirror", "customer", "--once")
	if !strings.Contains(r.out, "customer_mirror caught up") || !strings.Contains(r.out, ": 48 rows") {
		t.Fatalf("mirror --once: %s", r.out)
	}
	var version int64
	var name string
	var tierCol *string
	var updated time.Time
	if err := pool.QueryRow(ctx, "SELECT version, name, tier, updated_at FROM customer_mirror WHERE _key = 'c07'").Scan(&version, &name, &tierCol, &updated); err != nil {
		t.Fatal(err)
	}
	if version != 2 || name != "name-c07" || tierCol == nil || *tierCol != "gold" || updated.IsZero() {
		t.Fatalf("mirror row c07 = %d %s %v %v", version, name, tierCol, updated)
	}
	// Run again: nothing new, nothing applied twice.
	if r := must("mirror", "customer", "--once"); !strings.Contains(r.out, ": 48 rows") {
		t.Fatalf("second mirror --once: %s", r.out)
	}

	// Garbage on the topic: tail shows it in hex, never crashes.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Seeds...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("junk"), Value: []byte{0xde, 0xad}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	r = must("tail", topic, "--from-beginning")
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(r.out))
	var sawTombstone, sawJunk, sawDecoded bool
	for sc.Scan() {
		lines++
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("tail printed a line that is not JSON: %q", sc.Text())
		}
		switch {
		case l["key"] == "junk":
			sawJunk = l["value_hex"] == "dead" && l["error"] != nil
		case l["value"] == nil:
			sawTombstone = true
		default:
			v := l["value"].(map[string]any)
			hs := l["headers"].(map[string]any)
			sawDecoded = sawDecoded || (v["id"] == l["key"] && hs["ecst-event-type"] == "customer.upserted")
		}
	}
	if lines != 54 || !sawTombstone || !sawJunk || !sawDecoded {
		t.Fatalf("tail: %d lines (want 54), tombstone %v, junk %v, decoded %v\n%s", lines, sawTombstone, sawJunk, sawDecoded, r.out)
	}
	r = must("tail", topic, "--from-beginning", "-n", "3")
	if got := strings.Count(r.out, "\n"); got != 3 {
		t.Fatalf("tail -n 3 printed %d lines", got)
	}
	r = must("tail", topic, "--from-beginning", "--key", "c07")
	if got := strings.Count(r.out, "\n"); got != 2 {
		t.Fatalf("tail --key c07 printed %d lines, want its 2 records", got)
	}

	// A mirror with the junk record halts by default, and skips with --poison skip.
	if r := run(t, env, "--config", cfgPath, "mirror", "customer", "--once"); r.code != cli.ExitError || !strings.Contains(r.err, "poison record") {
		t.Fatalf("mirror over junk: code %d\n%s", r.code, r.err)
	}
	must("mirror", "customer", "--once", "--poison", "skip")

	// Someone breaks the mirror by hand; a rebuild brings it back.
	if _, err := pool.Exec(ctx, "UPDATE customer_mirror SET name = 'corrupted'; DELETE FROM customer_mirror WHERE _key = 'c10'"); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "--config", cfgPath, "rebuild", "mirror:customer_mirror")
	if r.code != cli.ExitError || !strings.Contains(r.err, "poison") {
		t.Fatalf("rebuild over junk should halt: code %d\n%s%s", r.code, r.out, r.err)
	}
	var corrupted int
	pool.QueryRow(ctx, "SELECT count(*) FROM customer_mirror WHERE name = 'corrupted'").Scan(&corrupted)
	if corrupted != 47 {
		t.Fatalf("a failed rebuild touched the live table: %d corrupted rows, want 47", corrupted)
	}
	r = must("rebuild", "mirror:customer_mirror", "--poison", "skip")
	if !strings.Contains(r.out, "customer_mirror rebuilt from "+topic+" and swapped in: 48 rows") {
		t.Fatalf("rebuild: %s", r.out)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM customer_mirror WHERE name = 'corrupted'").Scan(&corrupted); err != nil || corrupted != 0 {
		t.Fatalf("after the rebuild %d rows are still corrupted (%v)", corrupted, err)
	}
	if err := pool.QueryRow(ctx, "SELECT name FROM customer_mirror WHERE _key = 'c10'").Scan(&name); err != nil || name != "name-c10" {
		t.Fatalf("c10 after the rebuild: %q %v", name, err)
	}
}
