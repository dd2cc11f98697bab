package config

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultConnectTimeout bounds each PostgreSQL connect (TCP, TLS and
// start-up) when the connection string sets no connect_timeout. Without a
// bound, pgx waits for ever on a server that accepts the connection and
// never answers.
const DefaultConnectTimeout = 10 * time.Second

// PoolConfig parses the database settings for pgxpool. Every connection the
// pool opens, and every connection made from its ConnConfig (the relay's
// lock connection), gives up after the connect_timeout of the connection
// string (or PGCONNECT_TIMEOUT), else after DefaultConnectTimeout. As in
// libpq, an explicit connect_timeout=0 waits for ever.
//
// Every PostgreSQL connection ecst opens starts from here (or from Connect).
func (d Database) PoolConfig() (*pgxpool.Config, error) {
	conn, err := d.ConnString()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		// pgx's parse errors quote the string, password included.
		return nil, fmt.Errorf("database.url (ECST_DATABASE_URL) %s is not a valid PostgreSQL connection string", d.URL)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 && !connectTimeoutSet(conn) {
		pcfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	return pcfg, nil
}

// Connect opens a pool on the database settings and checks that the
// database answers. Its errors say which setting to fix and never show a
// password.
func (d Database) Connect(ctx context.Context) (*pgxpool.Pool, error) {
	pcfg, err := d.PoolConfig()
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", d.URL, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, d.connectError(ctx, err, pcfg.ConnConfig.ConnectTimeout)
	}
	return pool, nil
}

// connectError explains a failed connect: a server that did not answer in
// time gets the bound and how to raise it.
func (d Database) connectError(ctx context.Context, err error, bound time.Duration) error {
	if ctx.Err() == nil && bound > 0 && (pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("connect to PostgreSQL at %s: no answer within %s; check that ECST_DATABASE_URL (database.url) names a PostgreSQL server that is up, or, if it is only slow, raise the bound with connect_timeout=N (seconds) in the URL",
			d.URL, bound)
	}
	return fmt.Errorf("connect to PostgreSQL at %s: %w (check ECST_DATABASE_URL and that the server is up)", d.URL, err)
}

var connectTimeoutKV = regexp.MustCompile(`(^|\s)connect_timeout\s*=`)

// connectTimeoutSet reports whether conn, or the environment pgx reads,
// sets connect_timeout (to tell an explicit 0 from none).
func connectTimeoutSet(conn string) bool {
	if os.Getenv("PGCONNECT_TIMEOUT") != "" {
		return true
	}
	if strings.Contains(conn, "://") {
		u, err := url.Parse(conn)
		return err == nil && u.Query().Has("connect_timeout")
	}
	return connectTimeoutKV.MatchString(conn)
}
