package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Override is one setting that an ECST_* variable, and for the settings
// that are not secret a command-line flag, can set over the file.
// Credentials have no flag: a flag shows in the process list and in shell
// history.
type Override struct {
	// Env is the ECST_* variable.
	Env  string
	Flag string // "" for settings that have no flag
	// Usage is the flag's help text ("" with no flag).
	Usage string
	// Bool marks a boolean: its flag takes no value (--kafka-tls,
	// --kafka-tls=false).
	Bool bool
	// Set applies a value. Its errors say what is wrong with the value;
	// the caller names where it came from (the variable or the flag).
	Set func(c *Config, v string) error
}

func str(dst func(c *Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func boolean(dst func(c *Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean; use true or false", v)
		}
		*dst(c) = b
		return nil
	}
}

// Overrides lists every setting the environment and flags can override, in
// the order --help shows them.
var Overrides = []Override{
	{Env: "ECST_SERVICE", Flag: "service", Usage: "producing service name (the ecst-source header)", Set: str(func(c *Config) *string { return &c.Service })},
	{Env: "ECST_DATABASE_URL", Flag: "database-url", Usage: "PostgreSQL URL; prefer the variable when it holds a password", Set: func(c *Config, v string) error { c.Database.URL = SecretURL(v); return nil }},
	{Env: "ECST_DATABASE_SSLMODE", Flag: "database-sslmode", Usage: "PostgreSQL sslmode (disable, require, verify-full, ...)", Set: str(func(c *Config) *string { return &c.Database.SSLMode })},
	{Env: "ECST_BROKERS", Flag: "brokers", Usage: "Kafka seed brokers, host:port, comma-separated", Set: func(c *Config, v string) error {
		c.Kafka.Brokers = splitList(v)
		return nil
	}},
	{Env: "ECST_KAFKA_CLIENT_ID", Set: str(func(c *Config) *string { return &c.Kafka.ClientID })},
	{Env: "ECST_KAFKA_TLS", Flag: "kafka-tls", Usage: "use TLS to the brokers", Bool: true, Set: boolean(func(c *Config) *bool { return &c.Kafka.TLS.Enabled })},
	{Env: "ECST_KAFKA_TLS_CA_FILE", Flag: "kafka-tls-ca-file", Usage: "PEM CA bundle for the brokers", Set: str(func(c *Config) *string { return &c.Kafka.TLS.CAFile })},
	{Env: "ECST_KAFKA_TLS_CERT_FILE", Flag: "kafka-tls-cert-file", Usage: "PEM client certificate for the brokers", Set: str(func(c *Config) *string { return &c.Kafka.TLS.CertFile })},
	{Env: "ECST_KAFKA_TLS_KEY_FILE", Flag: "kafka-tls-key-file", Usage: "PEM client key for the brokers", Set: str(func(c *Config) *string { return &c.Kafka.TLS.KeyFile })},
	{Env: "ECST_KAFKA_TLS_SERVER_NAME", Set: str(func(c *Config) *string { return &c.Kafka.TLS.ServerName })},
	{Env: "ECST_KAFKA_TLS_INSECURE_SKIP_VERIFY", Bool: true, Set: boolean(func(c *Config) *bool { return &c.Kafka.TLS.InsecureSkipVerify })},
	{Env: "ECST_KAFKA_SASL_MECHANISM", Flag: "kafka-sasl-mechanism", Usage: "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", Set: str(func(c *Config) *string { return &c.Kafka.SASL.Mechanism })},
	{Env: "ECST_KAFKA_SASL_USERNAME", Flag: "kafka-sasl-username", Usage: "SASL user name", Set: str(func(c *Config) *string { return &c.Kafka.SASL.Username })},
	{Env: "ECST_KAFKA_SASL_PASSWORD", Set: func(c *Config, v string) error { c.Kafka.SASL.Password = Secret(v); return nil }},
	{Env: "ECST_OUTBOX_SHARDS", Set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.Outbox.Shards = n
		return nil
	}},
	{Env: "ECST_OUTBOX_TRANSPORT", Set: str(func(c *Config) *string { return &c.Outbox.Transport })},
	{Env: "ECST_RELAY_WAL_HEARTBEAT", Set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil // a bare number is seconds
		}
		if err != nil {
			return fmt.Errorf("%q is not a duration (10s, 500ms)", v)
		}
		c.Relay.WALHeartbeat = d
		return nil
	}},
	{Env: "ECST_RELAY_ON_REJECT", Set: str(func(c *Config) *string { return &c.Relay.OnReject })},
	{Env: "ECST_METRICS_ADDR", Flag: "metrics-addr", Usage: "address for /metrics, /healthz and /readyz (\"off\" to disable)", Set: str(func(c *Config) *string { return &c.Relay.MetricsAddr })},
	{Env: "ECST_VERIFY_METRICS_ADDR", Flag: "verify-metrics-addr", Usage: "address for the /metrics and /healthz of verify --every (\"off\" to disable)", Set: str(func(c *Config) *string { return &c.Verify.MetricsAddr })},
	{Env: "ECST_SCHEMA_REGISTRY_URL", Flag: "schema-registry-url", Usage: "Schema Registry URL", Set: func(c *Config, v string) error { c.Registry.URL = SecretURL(v); return nil }},
	{Env: "ECST_SCHEMA_REGISTRY_USERNAME", Set: str(func(c *Config) *string { return &c.Registry.Username })},
	{Env: "ECST_SCHEMA_REGISTRY_PASSWORD", Set: func(c *Config, v string) error { c.Registry.Password = Secret(v); return nil }},
	{Env: "ECST_SCHEMA_REGISTRY_TLS_CA_FILE", Set: str(func(c *Config) *string { return &c.Registry.TLS.CAFile })},
	{Env: "ECST_SCHEMA_REGISTRY_TLS_CERT_FILE", Set: str(func(c *Config) *string { return &c.Registry.TLS.CertFile })},
	{Env: "ECST_SCHEMA_REGISTRY_TLS_KEY_FILE", Set: str(func(c *Config) *string { return &c.Registry.TLS.KeyFile })},
	{Env: "ECST_SCHEMA_REGISTRY_TLS_INSECURE_SKIP_VERIFY", Bool: true, Set: boolean(func(c *Config) *bool { return &c.Registry.TLS.InsecureSkipVerify })},
	{Env: "ECST_SCHEMA_REGISTRY_AUTO_REGISTER", Bool: true, Set: boolean(func(c *Config) *bool { return &c.Registry.AutoRegister })},
}

// ApplyEnv applies every ECST_* variable that is set.
func ApplyEnv(c *Config, env func(string) string) error {
	if env == nil {
		return nil
	}
	for _, o := range Overrides {
		if v := env(o.Env); v != "" {
			if err := o.Set(c, v); err != nil {
				return fmt.Errorf("%s: %w", o.Env, err)
			}
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ConnString returns the database URL with sslmode applied. It is the
// revealed string: hand it to pgx, never to a log.
func (d Database) ConnString() (string, error) {
	raw := d.URL.Reveal()
	if raw == "" {
		return "", fmt.Errorf("database.url: is not set; set ECST_DATABASE_URL (for example postgres://user@localhost:5432/app)")
	}
	if d.SSLMode == "" {
		return raw, nil
	}
	if !strings.Contains(raw, "://") {
		return raw + " sslmode=" + d.SSLMode, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("database.url: %s is not a valid URL", d.URL)
	}
	q := u.Query()
	q.Set("sslmode", d.SSLMode)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
