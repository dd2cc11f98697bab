package producer_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	pool *pgxpool.Pool
	reg  *srfake.Registry
	cfg  *config.Config
	pub  *producer.Publisher
	id   int // registered schema id
}

type fixtureOpts struct {
	unregistered bool
	autoRegister bool
	wal          bool // the database switched to the WAL transport, and the Publisher on it
}

// newFixture gives a migrated database with the customers table, an
// in-process registry with the customer schema registered, and a
// Publisher for the example's ecst.yaml.
func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{pool: pgtest.NewDB(t), reg: srfake.New()}
	t.Cleanup(f.reg.Close)
	if _, err := f.pool.Exec(ctx, customers.TableSQL); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load("../examples/customers/ecst.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registry.URL = config.SecretURL(f.reg.URL())
	cfg.Registry.AutoRegister = o.autoRegister
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	if !o.unregistered {
		// Register other subjects first so that the id is not trivially 1.
		if _, _, err := f.reg.RegisterSchema("other-value", sr.Schema{Schema: `"string"`}); err != nil {
			t.Fatal(err)
		}
		if f.id, _, err = f.reg.RegisterSchema("customers.state-value", sr.Schema{Schema: customers.Schema}); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if o.wal {
		// The slot is named after the service: one per test database.
		var db string
		if err := f.pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			t.Fatal(err)
		}
		cfg.Service += "-" + db
		if _, err := relay.Switch(ctx, f.pool, outbox.TransportWAL, relay.SwitchOptions{Service: cfg.Service}); err != nil {
			t.Fatal(err)
		}
		cfg.Outbox.Transport = config.TransportWAL
	}
	if f.pub, err = producer.FromConfig(cfg, reg); err != nil {
		t.Fatal(err)
	}
	return f
}

type outboxRow struct {
	ID      int64
	Topic   string
	Key     string
	Value   []byte
	Headers map[string]string
}

func (f *fixture) rows(t testing.TB) []outboxRow {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT id, topic, key, value, headers FROM ecst.outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var out []outboxRow
	var r outboxRow
	var hb []byte
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Topic, &r.Key, &r.Value, &hb}, func() error {
		hs, err := outbox.DecodeHeaders(hb)
		if err != nil {
			return err
		}
		row := r
		row.Headers = map[string]string{}
		for _, h := range hs {
			row.Headers[h.Key] = string(h.Value)
		}
		out = append(out, row)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func srSchema(s string) sr.Schema { return sr.Schema{Schema: s} }
