package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"

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
	// Logger receives the request and service logs (nil: none).
	Logger *slog.Logger
}

// Run starts the service and serves until ctx ends. It fails at start,
// with an error naming the setting to fix, when the database does not
// answer or the customer schema is not registered.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, _, err := web.Config(o.ConfigPath, o.Env, Entity)
	if err != nil {
		return err
	}
	pool, err := cfg.Database.Connect(ctx) // a bounded connect, an error naming the setting
	if err != nil {
		return err
	}
	defer pool.Close()
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
	ln, err := web.Listen(o.Listener, o.Addr)
	if err != nil {
		return err
	}
	log.Info("customers-api starting", "service", cfg.Service, "database", cfg.Database.URL, "registry", cfg.Registry.URL)
	return web.Serve(ctx, ln, New(pool, pub, log).Handler(), log)
}
