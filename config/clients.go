package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"

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
