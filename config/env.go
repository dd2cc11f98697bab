package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Override is one setting that an ECST_* variable, and for the settings
// that are not secret a command-line flag, can set over the file.
// Credentials have no flag: a flag shows in the process list and in shell
// history.
type Override struct {
	Env   string
	Flag  string // "" for settings that have no flag
	Usage string
	Set   func(c *Config, v string) error
}

func str(dst func(c *Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func boolean(name string, dst func(c *Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not a boolean; use true or false", name, v)
		}
		*dst(c) = b
		return nil
	}
}

// Overrides lists every setting the environment and flags can override, in
// the order --help shows them.
var Overrides = []Override{
	{"ECST_SERVICE", "service", "producing service name (the ecst-source header)", str(func(c *Config) *string { return &c.Service })},
	{"ECST_DATABASE_URL", "database-url", "PostgreSQL URL; prefer the variable when it holds a password", func(c *Config, v string) error { c.Database.URL = SecretURL(v); return nil }},
	{"ECST_DATABASE_SSLMODE", "database-sslmode", "PostgreSQL sslmode (disable, require, verify-full, ...)", str(func(c *Config) *string { return &c.Database.SSLMode })},
	{"ECST_BROKERS", "brokers", "Kafka seed brokers, host:port, comma-separated", func(c *Config, v string) error {
		c.Kafka.Brokers = splitList(v)
		return nil
	}},
	{"ECST_KAFKA_CLIENT_ID", "", "", str(func(c *Config) *string { return &c.Kafka.ClientID })},
	{"ECST_KAFKA_TLS", "kafka-tls", "use TLS to the brokers", boolean("ECST_KAFKA_TLS", func(c *Config) *bool { return &c.Kafka.TLS.Enabled })},
	{"ECST_KAFKA_TLS_CA_FILE", "kafka-tls-ca-file", "PEM CA bundle for the brokers", str(func(c *Config) *string { return &c.Kafka.TLS.CAFile })},
	{"ECST_KAFKA_TLS_CERT_FILE", "kafka-tls-cert-file", "PEM client certificate for the brokers", str(func(c *Config) *string { return &c.Kafka.TLS.CertFile })},
	{"ECST_KAFKA_TLS_KEY_FILE", "kafka-tls-key-file", "PEM client key for the brokers", str(func(c *Config) *string { return &c.Kafka.TLS.KeyFile })},
	{"ECST_KAFKA_TLS_SERVER_NAME", "", "", str(func(c *Config) *string { return &c.Kafka.TLS.ServerName })},
	{"ECST_KAFKA_TLS_INSECURE_SKIP_VERIFY", "", "", boolean("ECST_KAFKA_TLS_INSECURE_SKIP_VERIFY", func(c *Config) *bool { return &c.Kafka.TLS.InsecureSkipVerify })},
	{"ECST_KAFKA_SASL_MECHANISM", "kafka-sasl-mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", str(func(c *Config) *string { return &c.Kafka.SASL.Mechanism })},
	{"ECST_KAFKA_SASL_USERNAME", "kafka-sasl-username", "SASL user name", str(func(c *Config) *string { return &c.Kafka.SASL.Username })},
	{"ECST_KAFKA_SASL_PASSWORD", "", "", func(c *Config, v string) error { c.Kafka.SASL.Password = Secret(v); return nil }},
	{"ECST_OUTBOX_SHARDS", "", "", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("ECST_OUTBOX_SHARDS: %q is not a number", v)
		}
		c.Outbox.Shards = n
		return nil
	}},
	{"ECST_RELAY_ON_REJECT", "", "", str(func(c *Config) *string { return &c.Relay.OnReject })},
	{"ECST_METRICS_ADDR", "metrics-addr", "address for /metrics, /healthz and /readyz (\"off\" to disable)", str(func(c *Config) *string { return &c.Relay.MetricsAddr })},
	{"ECST_SCHEMA_REGISTRY_URL", "schema-registry-url", "Schema Registry URL", func(c *Config, v string) error { c.Registry.URL = SecretURL(v); return nil }},
	{"ECST_SCHEMA_REGISTRY_USERNAME", "", "", str(func(c *Config) *string { return &c.Registry.Username })},
	{"ECST_SCHEMA_REGISTRY_PASSWORD", "", "", func(c *Config, v string) error { c.Registry.Password = Secret(v); return nil }},
	{"ECST_SCHEMA_REGISTRY_TLS_CA_FILE", "", "", str(func(c *Config) *string { return &c.Registry.TLS.CAFile })},
	{"ECST_SCHEMA_REGISTRY_TLS_CERT_FILE", "", "", str(func(c *Config) *string { return &c.Registry.TLS.CertFile })},
	{"ECST_SCHEMA_REGISTRY_TLS_KEY_FILE", "", "", str(func(c *Config) *string { return &c.Registry.TLS.KeyFile })},
	{"ECST_SCHEMA_REGISTRY_TLS_INSECURE_SKIP_VERIFY", "", "", boolean("ECST_SCHEMA_REGISTRY_TLS_INSECURE_SKIP_VERIFY", func(c *Config) *bool { return &c.Registry.TLS.InsecureSkipVerify })},
	{"ECST_SCHEMA_REGISTRY_AUTO_REGISTER", "", "", boolean("ECST_SCHEMA_REGISTRY_AUTO_REGISTER", func(c *Config) *bool { return &c.Registry.AutoRegister })},
}

// ApplyEnv applies every ECST_* variable that is set.
func ApplyEnv(c *Config, env func(string) string) error {
	if env == nil {
		return nil
	}
	for _, o := range Overrides {
		if v := env(o.Env); v != "" {
			if err := o.Set(c, v); err != nil {
				return err
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
