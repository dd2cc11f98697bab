package config_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pgtest"
)

func TestConnectTimeoutFromURL(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]time.Duration{
		"postgres://app@db/app":                     config.DefaultConnectTimeout,
		"postgres://app@db/app?connect_timeout=3":   3 * time.Second,
		"postgres://app@db/app?connect_timeout=0":   0, // libpq's "wait for ever", asked for
		"host=db dbname=app":                        config.DefaultConnectTimeout,
		"host=db dbname=app connect_timeout=2":      2 * time.Second,
		"host=db connect_timeout = 0 dbname=app":    0,
		"postgres://app@db/app?sslmode=disable&x=1": config.DefaultConnectTimeout,
	} {
		pcfg, err := config.Database{URL: config.SecretURL(url)}.PoolConfig()
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if got := pcfg.ConnConfig.ConnectTimeout; got != want {
			t.Errorf("%s: connect timeout %v, want %v", url, got, want)
		}
		// Single connections made from the pool's settings (the relay's
		// lock connection) carry the bound too.
		if got := pcfg.ConnConfig.Copy().ConnectTimeout; got != want {
			t.Errorf("%s: a copied ConnConfig has connect timeout %v, want %v", url, got, want)
		}
	}
}

// TestConnectTimeoutFromEnvironment: PGCONNECT_TIMEOUT, which pgx reads,
// overrides the default like connect_timeout does.
func TestConnectTimeoutFromEnvironment(t *testing.T) {
	t.Setenv("PGCONNECT_TIMEOUT", "4")
	pcfg, err := config.Database{URL: "postgres://app@db/app"}.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got := pcfg.ConnConfig.ConnectTimeout; got != 4*time.Second {
		t.Fatalf("connect timeout %v, want 4s", got)
	}
}

// TestConnectGivesUpOnSilentServer: a server that accepts the connection
// and never answers is given up on within the bound, with an error that
// names the bound and the setting and shows no password.
func TestConnectGivesUpOnSilentServer(t *testing.T) {
	t.Parallel()
	addr := pgtest.Silent(t)
	// The outer deadline only keeps a regression from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	pool, err := config.Database{URL: config.SecretURL("postgres://app:hunter2@" + addr + "/app?connect_timeout=1")}.Connect(ctx)
	took := time.Since(start)
	if err == nil {
		pool.Close()
		t.Fatal("connected to a server that never answers")
	}
	msg := err.Error()
	for _, want := range []string{"no answer within 1s", "connect_timeout=N", "ECST_DATABASE_URL", addr} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error shows the password: %s", msg)
	}
	if took > 5*time.Second {
		t.Errorf("gave up after %v, want about 1s", took)
	}
}
