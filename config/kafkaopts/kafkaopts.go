// Package kafkaopts turns the kafka section of ecst.yaml into franz-go
// client options. It lives apart from package config so that a service that
// only writes events (package producer reads config) links no Kafka client.
package kafkaopts

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ecst-io/ecst/config"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Client returns the kgo options for k's seed brokers, client id, TLS and
// SASL. Every Kafka client ecst builds starts from these.
func Client(k config.Kafka) ([]kgo.Opt, error) {
	if len(k.Brokers) == 0 {
		return nil, errors.New("kafka.brokers: no brokers set; set ECST_BROKERS (host:port, comma-separated) or --brokers")
	}
	opts := []kgo.Opt{kgo.SeedBrokers(k.Brokers...)}
	if k.ClientID != "" {
		opts = append(opts, kgo.ClientID(k.ClientID))
	}
	tlsCfg, err := k.TLS.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	if tlsCfg != nil {
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: tlsCfg}
		opts = append(opts, kgo.Dialer(dialer.DialContext))
	}
	user, pass := k.SASL.Username, k.SASL.Password.Reveal()
	switch k.SASL.Mechanism {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafka.sasl.mechanism: %q is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASL.Mechanism)
	}
	return opts, nil
}
