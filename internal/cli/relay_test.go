package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/outbox"
)

// TestRelayDrainCounts: `ecst relay --drain` says how many records it
// published to each topic, and ends with the totals.
func TestRelayDrainCounts(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t)
	suffix := time.Now().UnixNano()
	books, authors := fmt.Sprintf("cli-count-books-%d", suffix), fmt.Sprintf("cli-count-authors-%d", suffix)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "customer.avsc"), []byte(customers.Schema), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`service: s
entities:
  book:
    topic: %s
    schema: customer.avsc
    partitions: 1
    replication_factor: 1
  author:
    topic: %s
    schema: customer.avsc
    partitions: 1
    replication_factor: 1
`, books, authors)), 0o644); err != nil {
		t.Fatal(err)
	}
	dbURL := newMigratedDB(t)
	env := map[string]string{"ECST_BROKERS": strings.Join(b.Seeds, ","), "ECST_DATABASE_URL": dbURL, "ECST_METRICS_ADDR": "off"}
	if r := run(t, env, "--config", cfg, "topics", "apply"); r.code != 0 {
		t.Fatal(r.err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for i, topic := range []string{books, books, books, authors, authors} {
			if err := outbox.Insert(ctx, tx, outbox.Row{Topic: topic, Key: fmt.Sprint("k", i), Value: []byte("v")}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	r := run(t, env, "--config", cfg, "relay", "--drain")
	if r.code != 0 {
		t.Fatalf("drain: code %d\n%s%s", r.code, r.out, r.err)
	}
	want := regexp.MustCompile(`^published to ` + authors + `\s+2 records\npublished to ` + books + `\s+3 records\n` +
		`outbox drained: 5 records published to 2 topics\n$`)
	if !want.MatchString(r.out) {
		t.Fatalf("drain printed:\n%s\nwant it to match %s", r.out, want)
	}
	r = run(t, env, "--config", cfg, "relay", "--drain")
	if r.code != 0 || r.out != "outbox drained: 0 records published\n" {
		t.Fatalf("drain of an empty outbox: code %d\n%s%s", r.code, r.out, r.err)
	}
}
