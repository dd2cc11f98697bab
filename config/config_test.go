package config_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const schema = `{"type":"record","name":"Customer","fields":[{"name":"id","type":"string"},{"name":"version","type":"long"}]}`

// write puts an ecst.yaml and a schema file in a fresh directory.
func write(t *testing.T, yml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(schema), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ecst.yaml")
	if err := os.WriteFile(p, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, yml string, env map[string]string) (*config.Config, error) {
	t.Helper()
	cfg, err := config.Load(write(t, yml), func(k string) string { return env[k] })
	if err != nil {
		return nil, err
	}
	return cfg, cfg.Finish()
}

// customerHead is an ecst.yaml as far as its customer entity's source
// table: the tests go on from there.
const customerHead = `service: customers-api
entities:
  customer:
    topic: customers.state
    schema: schemas/customer.avsc
    source:
      table: customers
`

const good = "\n" + customerHead + `      key: id
      version: version
      query: SELECT id, version, name FROM customers
`

func TestLoadExample(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("../examples/customers/ecst.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	e, err := cfg.Entity("customer")
	if err != nil {
		t.Fatal(err)
	}
	if e.Subject() != "customers.state-value" || e.Compatibility != "FULL_TRANSITIVE" || e.Partitions != 6 || e.SchemaText == "" {
		t.Fatalf("entity = %+v", e)
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := load(t, `
service: s
entities:
  customer:
    topic: customers.state
    schema: schemas/customer.avsc
    source: {table: customers, key: id}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Entities["customer"]
	if e.Compatibility != config.DefaultCompatibility || e.Partitions != config.DefaultPartitions ||
		e.ReplicationFactor != config.DefaultReplicationFactor || e.Source.Query != `SELECT * FROM "customers"` || e.Name != "customer" {
		t.Fatalf("defaults not applied: %+v %+v", e, e.Source)
	}
	if cfg.Outbox.Transport != config.TransportTable || cfg.Relay.WALHeartbeat != config.DefaultWALHeartbeat {
		t.Fatalf("transport %q, heartbeat %v: want the table transport and the default heartbeat", cfg.Outbox.Transport, cfg.Relay.WALHeartbeat)
	}
}

func TestErrorsNameFieldAndFix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		yml  string
		want []string // all must appear in the error
	}{
		{"unknown top-level key", "service: s\nentites: {}\n", []string{`unknown key "entites"`, "entities"}},
		{"unknown entity key", strings.Replace(good, "    topic:", "    topik: x\n    topic:", 1), []string{`unknown key "topik"`, "topic, schema"}},
		{"unknown source key", strings.Replace(good, "      key: id", "      key: id\n      keys: id", 1), []string{`unknown key "keys"`, "table, key, version, query"}},
		{"missing schema file", strings.Replace(good, "schemas/customer.avsc", "schemas/nope.avsc", 1), []string{"entities.customer.schema", "nope.avsc does not exist", "fix the path"}},
		{"schema not avro", strings.Replace(good, "schemas/customer.avsc", "ecst.yaml", 1), []string{"entities.customer.schema", "JSON syntax error in schema file", "ecst.yaml at line 2, column 1"}},
		{"two entities one topic", good + `
  account:
    topic: customers.state
    schema: schemas/customer.avsc
`, []string{"entities.", ".topic", `topic "customers.state" is also used by entity`, "each entity needs a topic of its own"}},
		{"query without key", strings.Replace(good, "SELECT id, version, name", "SELECT version, name", 1), []string{"entities.customer.source.query", `does not select the key column "id"`, "add id to the select list"}},
		{"query without version", strings.Replace(good, "SELECT id, version, name", "SELECT id, name", 1), []string{"entities.customer.source.query", `version column "version"`}},
		{"no key", strings.Replace(good, "      key: id\n", "", 1), []string{"entities.customer.source.key", "is required"}},
		{"no topic", strings.Replace(good, "    topic: customers.state\n", "", 1), []string{"entities.customer.topic", "is required"}},
		{"bad topic", strings.Replace(good, "customers.state", "customers state", 1), []string{"entities.customer.topic", "not a valid Kafka topic name"}},
		{"bad compatibility", strings.Replace(good, "    topic:", "    compatibility: SIDEWAYS\n    topic:", 1), []string{"entities.customer.compatibility", "FULL_TRANSITIVE"}},
		{"bad entity name", strings.Replace(good, "  customer:", "  Customer:", 1), []string{"entities.Customer", "lowercase"}},
		{"bad partitions", strings.Replace(good, "    topic:", "    partitions: -3\n    topic:", 1), []string{"entities.customer.partitions"}},
		{"bad sslmode", good + "database: {sslmode: maybe}\n", []string{"database.sslmode", "verify-full"}},
		{"sasl without password", good + "kafka: {sasl: {mechanism: SCRAM-SHA-512, username: u}}\n", []string{"kafka.sasl.password", "ECST_KAFKA_SASL_PASSWORD"}},
		{"sasl unknown mechanism", good + "kafka: {sasl: {mechanism: GSSAPI, username: u, password: p}}\n", []string{"kafka.sasl.mechanism", "SCRAM-SHA-256"}},
		{"sasl creds without mechanism", good + "kafka: {sasl: {username: u}}\n", []string{"kafka.sasl.mechanism", "PLAIN"}},
		{"tls cert without key", good + "kafka: {tls: {cert_file: ecst.yaml}}\n", []string{"kafka.tls", "key_file"}},
		{"tls missing ca", good + "kafka: {tls: {ca_file: /nonexistent/ca.pem}}\n", []string{"kafka.tls.ca_file", "/nonexistent/ca.pem"}},
		{"broker with scheme", good + "kafka: {brokers: ['kafka://b:9092']}\n", []string{"kafka.brokers[0]", "host:port"}},
		{"registry url", good + "schema_registry: {url: 'registry:8081'}\n", []string{"schema_registry.url", "http://"}},
		{"bad transport", good + "outbox: {transport: kafka}\n", []string{"outbox.transport", `"kafka" is not table or wal`}},
		{"short heartbeat", good + "relay: {wal_heartbeat: 1ms}\n", []string{"relay.wal_heartbeat", "at least 100ms"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, c.yml, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAllErrorsReportedTogether(t *testing.T) {
	t.Parallel()
	_, err := load(t, `
entities:
  customer:
    schema: schemas/none.avsc
    compatibility: WHATEVER
`, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"entities.customer.topic", "entities.customer.schema", "entities.customer.compatibility"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %s in:\n%v", w, err)
		}
	}
}

func TestExplicitMissingFile(t *testing.T) {
	t.Parallel()
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	t.Parallel()
	cfg, err := load(t, good+`
database: {url: 'postgres://file@db/app'}
kafka: {brokers: [file:9092]}
schema_registry: {url: 'http://file:8081'}
`, map[string]string{
		"ECST_DATABASE_URL":         "postgres://env@db/app",
		"ECST_BROKERS":              "a:9092, b:9092",
		"ECST_SERVICE":              "from-env",
		"ECST_KAFKA_SASL_MECHANISM": "scram-sha-256",
		"ECST_KAFKA_SASL_USERNAME":  "u",
		"ECST_KAFKA_SASL_PASSWORD":  "p",
		"ECST_OUTBOX_TRANSPORT":     "wal",
		"ECST_RELAY_WAL_HEARTBEAT":  "2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Outbox.Transport != config.TransportWAL || cfg.Relay.WALHeartbeat != 2*time.Second {
		t.Fatalf("transport %q, heartbeat %v: the variables were not applied", cfg.Outbox.Transport, cfg.Relay.WALHeartbeat)
	}
	if cfg.Database.URL.Reveal() != "postgres://env@db/app" || strings.Join(cfg.Kafka.Brokers, ",") != "a:9092,b:9092" ||
		cfg.Service != "from-env" || cfg.Registry.URL.Reveal() != "http://file:8081" || cfg.Kafka.SASL.Mechanism != "SCRAM-SHA-256" {
		t.Fatalf("overrides not applied: %+v", cfg)
	}
	if _, err := kafkaopts.Client(cfg.Kafka); err != nil {
		t.Fatal(err)
	}
}

func TestBadBooleanEnv(t *testing.T) {
	t.Parallel()
	_, err := load(t, good, map[string]string{"ECST_KAFKA_TLS": "yes please"})
	if err == nil || !strings.Contains(err.Error(), "ECST_KAFKA_TLS") {
		t.Fatalf("err = %v", err)
	}
}

func TestSSLMode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ url, want string }{
		{"postgres://u@h/db", "postgres://u@h/db?sslmode=verify-full"},
		{"postgres://u@h/db?sslmode=disable", "postgres://u@h/db?sslmode=verify-full"},
		{"host=h dbname=db", "host=h dbname=db sslmode=verify-full"},
	} {
		got, err := config.Database{URL: config.SecretURL(c.url), SSLMode: "verify-full"}.ConnString()
		if err != nil || got != c.want {
			t.Errorf("ConnString(%s) = %q, %v; want %q", c.url, got, err, c.want)
		}
	}
	if _, err := (config.Database{}).ConnString(); err == nil || !strings.Contains(err.Error(), "ECST_DATABASE_URL") {
		t.Errorf("missing URL: %v", err)
	}
}

// TestSecretsNeverPrinted prints a config every way a program might, and
// looks for the credentials in the output.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const (
		dbPass   = "db-hunter2"
		saslPass = "sasl-hunter2"
		srPass   = "sr-hunter2"
		urlPass  = "url-hunter2"
	)
	cfg, err := load(t, good, map[string]string{
		"ECST_DATABASE_URL":             "postgres://app:" + dbPass + "@db:5432/app?sslpassword=" + dbPass,
		"ECST_KAFKA_SASL_MECHANISM":     "PLAIN",
		"ECST_KAFKA_SASL_USERNAME":      "u",
		"ECST_KAFKA_SASL_PASSWORD":      saslPass,
		"ECST_SCHEMA_REGISTRY_URL":      "https://reg:" + urlPass + "@registry:8081",
		"ECST_SCHEMA_REGISTRY_USERNAME": "u",
		"ECST_SCHEMA_REGISTRY_PASSWORD": srPass,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%v %+v %#v %s\n", cfg, cfg, cfg, cfg.Database.URL)
	fmt.Fprintf(&out, "%v %+v %#v\n", *cfg, cfg.Kafka, cfg.Registry)
	j, _ := json.Marshal(cfg)
	y, _ := yaml.Marshal(cfg)
	out.Write(j)
	out.Write(y)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("cfg", "cfg", cfg, "db", cfg.Database, "pw", cfg.Kafka.SASL.Password, "url", cfg.Registry.URL)
	slog.New(slog.NewTextHandler(&out, nil)).Info("cfg", "db", cfg.Database.URL, "pw", cfg.Registry.Password)
	for _, s := range []string{dbPass, saslPass, srPass, urlPass} {
		if strings.Contains(out.String(), s) {
			t.Fatalf("secret %q printed in:\n%s", s, out.String())
		}
	}
	if !strings.Contains(out.String(), "app:xxxxx@db:5432") {
		t.Errorf("redacted URL lost its useful parts:\n%s", out.String())
	}
	// Errors that quote a URL redact it too.
	bad, err := load(t, good, map[string]string{"ECST_SCHEMA_REGISTRY_URL": "ftp://u:" + urlPass + "@x"})
	if err == nil || strings.Contains(err.Error(), urlPass) {
		t.Fatalf("cfg %v, error leaks or is missing: %v", bad, err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                   "",
		"postgres://u@h/db":                  "postgres://u@h/db",
		"postgres://u:secret@h/db":           "postgres://u:xxxxx@h/db",
		"postgres://u@h/db?password=secret":  "postgres://u@h/db?password=xxxxx",
		"host=h password=secret dbname=d":    "host=h password=xxxxx dbname=d",
		"host=h password='sec ret' dbname=d": "[REDACTED]",
		"postgres://u:sec%zzret@h/db":        "[REDACTED]",
	} {
		if got := config.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSelectColumns(t *testing.T) {
	t.Parallel()
	ok := []string{
		"SELECT id,version FROM t",
		"select c.id, c.version from customers c",
		"SELECT DISTINCT id, version FROM t",
		"SELECT customer_id AS id, version FROM t",
		"SELECT lower(x) id, version FROM t",
		"SELECT * FROM t",
		"SELECT c.* FROM t c",
		`SELECT "id", version FROM t`,
		"SELECT id::text, version FROM t",
		"SELECT coalesce(a, (SELECT b FROM x)) AS id, version FROM t WHERE y IN (SELECT id FROM z)",
	}
	bad := []string{
		"SELECT version FROM t",
		"SELECT count(*), version FROM t",
		"SELECT version, (SELECT id FROM x) FROM t",
		"SELECT version + id FROM t",
		"UPDATE t SET id = 1",
	}
	check := func(queries []string, accepted bool) {
		for _, q := range queries {
			t.Run(q, func(t *testing.T) {
				t.Parallel()
				_, err := load(t, strings.Replace(good, "SELECT id, version, name FROM customers", q, 1), nil)
				if accepted && err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if !accepted && err == nil {
					t.Fatal("accepted")
				}
			})
		}
	}
	check(ok, true)
	check(bad, false)
}
