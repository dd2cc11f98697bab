package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

// Options configure Run.
type Options struct {
	// ConfigPath is the ecst.yaml to read ("" for ./ecst.yaml).
	ConfigPath string
	// Env supplies the ECST_* variables (os.Getenv).
	Env func(string) string
	// Addr is the HTTP listen address.
	Addr string
	// Listener, if set, is used instead of listening on Addr.
	Listener net.Listener
	Logger   *slog.Logger
}

// Run starts the service and serves until ctx ends. It fails at start,
// with an error naming the setting to fix, when the database does not
// answer or the customer schema is not registered.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := config.Load(o.ConfigPath, o.Env)
	if err != nil {
		return err
	}
	if err := cfg.Finish(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if _, err := cfg.Entity(Entity); err != nil {
		return err
	}
	conn, err := cfg.Database.ConnString()
	if err != nil {
		return err
	}
	pcfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		// pgx's parse errors quote the string, password included.
		return fmt.Errorf("database.url (ECST_DATABASE_URL) %s is not a valid PostgreSQL connection string", cfg.Database.URL)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w", cfg.Database.URL, err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w (check ECST_DATABASE_URL and that the server is up)", cfg.Database.URL, err)
	}
	if err := EnsureTable(ctx, pool); err != nil {
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
	if err := pub.Resolve(ctx); err != nil {
		return fmt.Errorf("resolve schemas at %s: %w", cfg.Registry.URL, err)
	}
	ln, err := listen(o.Listener, o.Addr)
	if err != nil {
		return err
	}
	log.Info("customers-api starting", "service", cfg.Service, "database", cfg.Database.URL, "registry", cfg.Registry.URL)
	return web.Serve(ctx, ln, New(pool, pub, log).Handler(), log)
}

func listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
