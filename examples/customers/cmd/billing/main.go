// Command billing is the customers example's consumer service: a read
// model of the customers it bills, replayed from the customers.state topic
// on every start and served over HTTP. Settings come from ecst.yaml and
// ECST_* variables.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers/billing"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
)

func main() {
	configPath := flag.String("config", "", "ecst.yaml that declares the customer entity (default ./ecst.yaml)")
	addr := flag.String("addr", ":8082", "HTTP listen address")
	poison := flag.String("poison", "halt", "what to do with a record that does not decode: halt, skip or dead-letter")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	log := web.Logger(os.Stderr, *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := billing.Run(ctx, billing.Options{ConfigPath: *configPath, Env: os.Getenv, Addr: *addr,
		Poison: consumer.PoisonPolicy(*poison), Logger: log})
	stop()
	if err != nil {
		log.Error("billing failed", "err", err)
		os.Exit(1)
	}
}
