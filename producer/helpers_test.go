package producer_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/producer"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	w    *ecsttest.World
	pool *pgxpool.Pool
	reg  *srfake.Registry
	pub  *producer.Publisher
	id   int // registered schema id
}

type fixtureOpts struct {
	unregistered bool
	autoRegister bool
	wal          bool // the database switched to the WAL transport, and the Publisher on it
}

// newFixture gives an offline ecsttest.World (the write path needs no
// broker) with the example's own topic and service names: a migrated
// database with the customers table, an in-process registry with the
// customer schema registered, and a Publisher for the example's ecst.yaml.
func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	service := "customers-api"
	if o.wal {
		// The slot is named after the service, and slots are the
		// cluster's: a service of the world's own.
		service = ""
	}
	w := ecsttest.New(t, ecsttest.Options{Offline: true, Topic: "customers.state", Service: service,
		Unregistered: o.unregistered, AutoRegister: o.autoRegister, WAL: o.wal})
	return &fixture{w: w, pool: w.Pool, reg: w.Fake, pub: w.Pub, id: w.SchemaID}
}

func (f *fixture) rows(t testing.TB) []ecsttest.OutboxRow {
	t.Helper()
	return f.w.Outbox()
}

func srSchema(s string) sr.Schema { return sr.Schema{Schema: s} }
