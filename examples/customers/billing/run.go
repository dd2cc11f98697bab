package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
	"github.com/ecst-io/ecst/schemas"
)

// Name is the consumer's name (its metrics label).
const Name = "billing"

// entity is the entity whose topic billing reads (ecst.yaml).
const entity = "customer"

// Options configure Run.
type Options struct {
	// ConfigPath is the ecst.yaml that declares the customer entity ("" for
	// ./ecst.yaml): billing reads its topic from there.
	ConfigPath string
	// Env supplies the ECST_* variables (os.Getenv).
	Env func(string) string
	// Addr is the HTTP listen address.
	Addr string
	// Listener, if set, is used instead of listening on Addr.
	Listener net.Listener
	// Model, if set, is the model to fill (it must be new); by default
	// Run makes one.
	Model *Model
	// Poison is what to do with a record that does not decode (default halt).
	Poison consumer.PoisonPolicy
	// Logger receives the consumer's and the server's logs (nil: none).
	Logger *slog.Logger
}

// Run replays the customer topic from offset 0 into a fresh model and
// serves it until ctx ends. A fatal consumer error (a poison record under
// halt, a topic that does not exist) stops the server and is returned.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, e, err := web.Config(o.ConfigPath, o.Env, entity)
	if err != nil {
		return err
	}
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return err
	}
	reg, err := schemas.NewRegistry(cfg.Registry)
	if err != nil {
		return err
	}
	defer reg.Close()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	model := o.Model
	if model == nil {
		model = NewModel()
	}
	c, err := consumer.New(consumer.Config[customers.Customer]{
		Name:         Name,
		Topic:        e.Topic,
		KafkaOpts:    kopts,
		Registry:     reg,
		ReaderSchema: customers.Schema,
		Store:        model,
		Poison:       o.Poison,
		Logger:       log,
		Registerer:   metrics,
	})
	if err != nil {
		return err
	}
	model.Bind(c.Ready)

	ln, err := web.Listen(o.Listener, o.Addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	mux.Handle("/", Handler(model, c.Ready, log))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		err := c.Run(ctx)
		if err != nil {
			log.Error("consumer stopped", "err", err)
			err = fmt.Errorf("consume %s: %w", e.Topic, err)
		}
		consumed <- err
		cancel() // a dead consumer's model goes stale: stop serving it
	}()
	log.Info("billing starting: replaying the topic from offset 0", "topic", e.Topic, "brokers", cfg.Kafka.Brokers)
	served := web.Serve(ctx, ln, mux, log)
	cancel()
	return errors.Join(<-consumed, served)
}
