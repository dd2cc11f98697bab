package capture_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/relay"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// world is an ecsttest.World with the customer entity's capture enabled
// and a resolver for its relays.
type world struct {
	*ecsttest.World
	t *testing.T
}

// transport is a transport a test runs in, as a subtest of its name.
type transport struct {
	name string
	opts ecsttest.Options
}

// transports are the outbox transports: markers travel through each.
func transports() []transport {
	return []transport{{"table", ecsttest.Options{}}, {"wal", ecsttest.Options{WAL: true}}}
}

// eachTransport runs f as a parallel subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, o ecsttest.Options)) {
	t.Helper()
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			f(t, tr.opts)
		})
	}
}

func newWorld(t *testing.T, o ecsttest.Options) *world {
	t.Helper()
	return &world{World: ecsttest.New(t, o), t: t}
}

func (w *world) enable() *capture.Plan {
	w.t.Helper()
	p, err := capture.Enable(context.Background(), w.Pool, w.Entity, false)
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// resolverConfig is the resolver of the world's relays; adjust lets a test
// set a hook.
func (w *world) resolverConfig() capture.ResolverConfig {
	return capture.ResolverConfig{Pool: w.Pool, Config: w.Config, Publisher: w.Pub, Kafka: w.Kafka()}
}

// relayConfig is the world's relay configuration with the resolver rc.
func (w *world) relayConfig(rc capture.ResolverConfig) relay.Config {
	w.t.Helper()
	res, err := capture.NewResolver(rc)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := w.RelayConfig()
	cfg.Resolver = res
	return cfg
}

// startRelay runs a relay with the world's resolver until the test ends
// or stop is called.
func (w *world) startRelay() (stop func() error) {
	w.t.Helper()
	return w.RunRelay(w.relayConfig(w.resolverConfig()))
}

// sourceState reads the entity's state through its source query: key →
// state.
func (w *world) sourceState() map[string]map[string]any {
	w.t.Helper()
	rows, err := w.Pool.Query(context.Background(), "SELECT id, version, name, email, tier, updated_at FROM ("+w.Entity.Source.Query+") s")
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]map[string]any{}
	var (
		id, name, email string
		tier            *string
		version         int64
		updated         time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &version, &name, &email, &tier, &updated}, func() error {
		s := map[string]any{"id": id, "version": version, "name": name, "email": email, "tier": nil, "updated_at": updated}
		if tier != nil {
			s["tier"] = *tier
		}
		out[id] = s
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// diffs says what differs between the topic's last record per key and
// the source query's rows (empty: they agree).
func (w *world) diffs() []string {
	w.t.Helper()
	src := w.sourceState()
	latest := w.Latest()
	var d []string
	for k, s := range src {
		r, ok := latest[k]
		if !ok {
			d = append(d, k+": not on the topic")
			continue
		}
		got, err := w.Decode(r)
		switch {
		case err != nil:
			d = append(d, fmt.Sprintf("%s: %v", k, err))
		case got == nil:
			d = append(d, k+": tombstone on the topic, row in the source")
		default:
			if diff := ecsttest.DiffState(s, got); diff != "" {
				d = append(d, k+": "+diff)
			}
		}
	}
	for k, r := range latest {
		if _, ok := src[k]; !ok && r.Value != nil {
			d = append(d, k+": alive on the topic, not in the source")
		}
	}
	return d
}

// converge waits until the topic's last record of every key equals the
// source.
func (w *world) converge(what string) {
	w.t.Helper()
	var last []string
	err := wait.Until(context.Background(), 90*time.Second, 200*time.Millisecond, what, func() (bool, error) {
		if w.OutboxLen() > 0 {
			return false, nil
		}
		last = w.diffs()
		return len(last) == 0, nil
	})
	if err != nil {
		w.t.Fatalf("%v: %d keys differ, e.g. %v", err, len(last), last[:min(5, len(last))])
	}
}

// psql runs sql with the PostgreSQL install's psql binary (no ecst code),
// stdin as its input.
func (w *world) psql(stdin string, args ...string) string {
	w.t.Helper()
	bin, err := pgcluster.BinDir()
	if err != nil {
		w.t.Fatal(err)
	}
	psql := filepath.Join(bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		w.t.Fatalf("psql is not in %s: %v", bin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", w.DBURL}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("psql %v: %v\n%s", args, err, out)
	}
	return string(out)
}
