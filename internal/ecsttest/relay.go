package ecsttest

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/relay"
)

// RelayLog is what the relays of RelayConfig have logged so far, as text
// (slog's text format).
func (w *World) RelayLog() string {
	if w.relayLog == nil {
		return ""
	}
	return w.relayLog.String()
}

// RelayConfig is the world's relay configuration: the relay polls fast,
// logs at debug level into a log the test prints if it fails, and has a
// pool of its own, as a relay process has: the writers and the test's own
// queries must not starve it (or it them).
func (w *World) RelayConfig() relay.Config {
	w.T.Helper()
	if w.relayLog == nil {
		w.relayLog = &testkit.Buffer{}
		w.T.Cleanup(func() {
			if w.T.Failed() {
				w.T.Logf("in-process relay log:\n%s", w.relayLog.String())
			}
		})
	}
	pool, err := pgxpool.New(context.Background(), w.DBURL)
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(pool.Close)
	return relay.Config{
		Logger:      slog.New(slog.NewTextHandler(w.relayLog, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Pool:        pool,
		KafkaOpts:   w.Kafka(),
		Service:     w.Service,
		TotalShards: w.Config.Outbox.Shards,
		Topics:      []string{w.Topic},
		PollMin:     time.Millisecond,
		PollMax:     20 * time.Millisecond,
		Transport:   outbox.Transport(w.Config.Outbox.Transport),
		// The slot's position is confirmed on each heartbeat: fast, so
		// that tests see it move.
		WALHeartbeat: 200 * time.Millisecond,
	}
}

// UseWAL moves the world to the WAL transport, as `ecst outbox switch wal`
// and a redeploy would: the database (the slot made, the switch done), its
// config and Env, its Publisher and its relays.
func (w *World) UseWAL() {
	w.T.Helper()
	if _, err := relay.Switch(context.Background(), w.Pool, outbox.TransportWAL, relay.SwitchOptions{Service: w.Service}); err != nil {
		w.T.Fatal(err)
	}
	w.Config.Outbox.Transport = config.TransportWAL
	w.Env["ECST_OUTBOX_TRANSPORT"] = config.TransportWAL
	pub, err := producer.FromConfig(w.Config, w.Registry)
	if err != nil {
		w.T.Fatal(err)
	}
	w.Pub = pub
}

// RunRelay runs a relay with cfg in process until stop is called or the
// test ends; stop returns what Run returned.
func (w *World) RunRelay(cfg relay.Config) (stop func() error) {
	w.T.Helper()
	r, err := relay.New(cfg)
	if err != nil {
		w.T.Fatal(err)
	}
	return testkit.Background(w.T, r.Run)
}

// StartRelay runs the world's relay until stop is called or the test ends.
// stop returns Run's error; a relay stopped before it got going (its
// context ended during its start-up checks) is no failure.
func (w *World) StartRelay() (stop func() error) {
	w.T.Helper()
	cfg := w.RelayConfig()
	run := w.RunRelay(cfg)
	return func() error {
		err := run()
		cfg.Pool.Close() // a test may start and stop many relays
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
}

// Drain runs the world's relay as `ecst relay --drain` does, and checks
// that it left the outbox empty.
func (w *World) Drain() {
	w.T.Helper()
	cfg := w.RelayConfig()
	defer cfg.Pool.Close()
	w.DrainWith(cfg)
}

// DrainWith is Drain with the relay configured by cfg.
func (w *World) DrainWith(cfg relay.Config) {
	w.T.Helper()
	cfg.Drain = true
	r, err := relay.New(cfg)
	if err != nil {
		w.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		w.T.Fatalf("relay --drain: %v", err)
	}
	if n := w.OutboxLen(); n != 0 {
		w.T.Fatalf("relay --drain left %d rows in the outbox", n)
	}
}

// WaitRelayLeads waits until a relay leads a shard of the world's outbox
// (on the WAL transport: streams the slot): one just started has then taken
// its lock.
func (w *World) WaitRelayLeads() {
	w.T.Helper()
	ctx := context.Background()
	if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "a relay to lead a shard", func() (bool, error) {
		if w.Config.Outbox.Transport == config.TransportWAL {
			return relay.LeadsWAL(ctx, w.Pool)
		}
		l, err := relay.Leaders(ctx, w.Pool)
		return len(l) > 0, err
	}); err != nil {
		w.T.Fatal(err)
	}
}
