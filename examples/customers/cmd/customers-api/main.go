// Command customers-api is the customers example's producer service:
// customers over HTTP, each write published through ecst's outbox in the
// same transaction. Settings come from ecst.yaml and ECST_* variables.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/ecst-io/ecst/examples/customers/api"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
)

func main() {
	configPath := flag.String("config", "", "ecst.yaml to read (default ./ecst.yaml)")
	addr := flag.String("addr", ":8080", "HTTP listen address")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	log := web.Logger(os.Stderr, *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := api.Run(ctx, api.Options{ConfigPath: *configPath, Env: os.Getenv, Addr: *addr, Logger: log})
	stop()
	if err != nil {
		log.Error("customers-api failed", "err", err)
		os.Exit(1)
	}
}
