// Package pgtest is the PostgreSQL harness every package's tests use. Each
// test binary starts one throwaway cluster (or uses ECST_TEST_DATABASE_URL),
// and each test gets a database of its own, cloned from a migrated template.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		pool := pgtest.NewDB(t)
//		...
//	}
package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/migrate"
)

// server is the one per test binary, set by Main.
var server struct {
	adminURL string // a URL to the maintenance database
	cluster  *pgcluster.Cluster
	prefix   string // database name prefix, unique to this process
	template string
	counter  atomic.Int64
}

// Main runs a package's tests with a PostgreSQL server, then checks that no
// goroutine leaked. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if fuzzWorker() {
		// A fuzzing worker runs only the fuzz target, which needs no
		// database: don't start a cluster per worker.
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := setUp(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	code := m.Run()
	tearDown()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: goroutines leaked:", err)
			return 1
		}
	}
	return code
}

func fuzzWorker() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzzworker") {
			return true
		}
	}
	return false
}

func setUp(ctx context.Context) error {
	server.prefix = fmt.Sprintf("ecst_t%d_", os.Getpid())
	if u := os.Getenv("ECST_TEST_DATABASE_URL"); u != "" {
		server.adminURL = u
	} else {
		// Logical: tests of the WAL transport stream replication slots.
		c, err := pgcluster.Start(ctx, pgcluster.Options{Durable: os.Getenv("ECST_TEST_PG_DURABLE") == "1", Logical: true})
		if err != nil {
			return err
		}
		server.cluster = c
		server.adminURL = c.URL("postgres")
	}
	// The template carries the migrations, so each test's database starts
	// migrated without paying for it.
	server.template = server.prefix + "template"
	if err := exec(ctx, server.adminURL, "CREATE DATABASE "+server.template); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, withDB(server.adminURL, server.template))
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	return nil
}

func tearDown() {
	if server.cluster != nil {
		_ = server.cluster.Stop()
		return
	}
	// A shared server: drop what this process created.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server.adminURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1", server.prefix+"%")
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		dropDB(n)
	}
}

// dropDB drops a test's database, and first the replication slots of the
// WAL transport's tests on it: PostgreSQL refuses to drop a database that
// a logical slot uses.
func dropDB(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server.adminURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	for ctx.Err() == nil {
		// A slot still streaming to a relay is released when its WAL
		// sender ends; until then pg_drop_replication_slot fails.
		var left int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT CASE WHEN active_pid IS NULL THEN pg_drop_replication_slot(slot_name) IS NULL
			            ELSE pg_terminate_backend(active_pid) END
			FROM pg_replication_slots WHERE database = $1) AS s`, name).Scan(&left)
		if err == nil && left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// Option adjusts NewDB.
type Option func(*dbOpts)

type dbOpts struct{ empty bool }

// Empty gives a database without the ecst schema, for migration tests.
func Empty() Option { return func(o *dbOpts) { o.empty = true } }

// NewDB creates a database for this test, migrated unless Empty is given,
// and returns a pool on it. The pool is closed and the database dropped
// when the test ends.
func NewDB(tb testing.TB, opts ...Option) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), NewDBURL(tb, opts...))
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// NewConn is NewDB for callers that need one connection: it is closed, and
// the database dropped, when the test ends.
func NewConn(tb testing.TB, opts ...Option) *pgx.Conn {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, NewDBURL(tb, opts...))
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// NewDBURL is NewDB for callers that connect themselves (a subprocess, say).
func NewDBURL(tb testing.TB, opts ...Option) string {
	tb.Helper()
	if server.adminURL == "" {
		tb.Fatal("pgtest: call pgtest.Main from TestMain")
	}
	var o dbOpts
	for _, opt := range opts {
		opt(&o)
	}
	name := fmt.Sprintf("%s%d", server.prefix, server.counter.Add(1))
	stmt := "CREATE DATABASE " + name
	if !o.empty {
		stmt += " TEMPLATE " + server.template
	}
	ctx := context.Background()
	if err := exec(ctx, server.adminURL, stmt); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() { dropDB(name) })
	return withDB(server.adminURL, name)
}

// Cluster returns the cluster this process started, or nil when the tests
// use ECST_TEST_DATABASE_URL. Tests that restart the server need it.
func Cluster() *pgcluster.Cluster { return server.cluster }

func exec(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", pgRedact(connURL), err)
	}
	defer conn.Close(ctx)
	// CREATE DATABASE from one template is serialized by PostgreSQL; a
	// concurrent clone can see "source database is being accessed".
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, sql)
		if err == nil || attempt == 20 || !strings.Contains(err.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func withDB(connURL, db string) string {
	u, err := url.Parse(connURL)
	if err != nil {
		panic(fmt.Sprintf("pgtest: ECST_TEST_DATABASE_URL must be a URL: %v", err))
	}
	u.Path = "/" + db
	return u.String()
}

func pgRedact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Silent starts a TCP server that accepts connections and never answers,
// like a PostgreSQL host that hangs, and returns its host:port. It stops
// when the test ends.
func Silent(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed at cleanup
			}
			held = append(held, c)
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}
