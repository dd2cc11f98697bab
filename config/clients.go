package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"
)

// ClientConfig builds a *tls.Config from the files named, or nil when TLS is
// off.
func (t TLS) ClientConfig() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented opt-in
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The error text may quote key material; keep only the files.
			return nil, fmt.Errorf("load client certificate %s with key %s: not a matching PEM certificate and key", t.CertFile, t.KeyFile)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ClientOpts returns the kgo options for seed brokers, TLS and SASL. Every
// Kafka client ecst builds starts from these.
func (k Kafka) ClientOpts() ([]kgo.Opt, error) {
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

// ClientOpts returns the sr options for URL, basic auth and TLS.
func (r Registry) ClientOpts() ([]sr.ClientOpt, error) {
	if r.URL == "" {
		return nil, errors.New("schema_registry.url: is not set; set ECST_SCHEMA_REGISTRY_URL or --schema-registry-url")
	}
	raw, user, pass := r.URL.Reveal(), r.Username, r.Password.Reveal()
	// Credentials in the URL move to basic auth, so that no error message
	// that quotes the request URL can carry them.
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if user == "" {
			user = u.User.Username()
			pass, _ = u.User.Password()
		}
		u.User = nil
		raw = u.String()
	}
	opts := []sr.ClientOpt{sr.URLs(raw), sr.UserAgent("ecst")}
	if user != "" {
		opts = append(opts, sr.BasicAuth(user, pass))
	}
	tlsCfg, err := r.TLS.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("schema_registry.tls: %w", err)
	}
	if tlsCfg != nil {
		opts = append(opts, sr.DialTLSConfig(tlsCfg))
	}
	return opts, nil
}
