// Package config loads and validates ecst.yaml: the entities a service
// publishes (topic, Avro schema, source-of-truth query) and the connection
// settings for PostgreSQL, Kafka and the Schema Registry.
//
// The producer, the relay, republish and verify all read the same
// declaration. Values come from the file, then ECST_* environment variables,
// then command-line flags, each overriding the one before. Every validation
// error names the field and says how to fix it; credentials never appear in
// any output (see Secret and SecretURL).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"go.yaml.in/yaml/v3"

	"github.com/ecst-io/ecst/internal/pgident"
)

// DefaultFile is the config file read when --config is not given.
const DefaultFile = "ecst.yaml"

// Defaults for fields left empty.
const (
	DefaultCompatibility     = "FULL_TRANSITIVE"
	DefaultPartitions        = 6
	DefaultReplicationFactor = -1 // the broker's default.replication.factor
)

// Compatibility levels accepted in entities.<name>.compatibility.
var CompatibilityLevels = []string{
	"NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE",
}

// Config is the whole of ecst.yaml after defaults and overrides.
type Config struct {
	// Service names the producing service; it is the ecst-source header.
	Service string `yaml:"service"`
	// Database is the service's PostgreSQL database (database).
	Database Database `yaml:"database"`
	// Kafka is the Kafka cluster (kafka).
	Kafka Kafka `yaml:"kafka"`
	// Registry is the Schema Registry (schema_registry).
	Registry Registry `yaml:"schema_registry"`
	// Outbox is the outbox table's layout (outbox); 1 shard by default.
	Outbox Outbox `yaml:"outbox"`
	// Relay tunes `ecst relay` (relay); Finish fills in its defaults.
	Relay Relay `yaml:"relay"`
	// Verify tunes `ecst verify --every` (verify); Finish fills in its
	// defaults.
	Verify Verify `yaml:"verify"`
	// Entities are the entity types the service publishes, by name
	// (entities); a command that needs one fails when there is none.
	Entities map[string]*Entity `yaml:"entities"`

	// Path is the file the config was read from ("" when none was).
	Path string `yaml:"-"`
}

// Database holds the PostgreSQL connection settings.
type Database struct {
	// URL is a postgres:// URL or a libpq key=value string (no default:
	// set ECST_DATABASE_URL). Printed with any password replaced.
	URL SecretURL `yaml:"url"`
	// SSLMode, when set, overrides any sslmode in URL.
	SSLMode string `yaml:"sslmode"`
}

// Kafka holds the broker connection settings.
type Kafka struct {
	// Brokers are the seed brokers, host:port (no default: set
	// ECST_BROKERS).
	Brokers []string `yaml:"brokers"`
	// ClientID is the client id ecst's Kafka clients send (franz-go's
	// "kgo" when empty).
	ClientID string `yaml:"client_id"`
	// TLS to the brokers; off by default.
	TLS TLS `yaml:"tls"`
	// SASL authentication to the brokers; none by default.
	SASL SASL `yaml:"sasl"`
}

// TLS configures a TLS client. Setting any file or flag enables TLS.
type TLS struct {
	// Enabled turns TLS on (false by default; any other field set turns it
	// on too).
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the authorities to trust ("": the
	// system's).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// mutual TLS ("": none).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"` // see CertFile
	// ServerName is the name certificates are checked against ("": the
	// host dialled).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify skips checking certificates; false by default,
	// and only for tests.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS is to be used.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.InsecureSkipVerify || t.ServerName != ""
}

// SASL configures Kafka authentication.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user; required with a mechanism.
	Username string `yaml:"username"`
	// Password is the SASL password; required with a mechanism. Never
	// printed; set ECST_KAFKA_SASL_PASSWORD rather than the file.
	Password Secret `yaml:"password"`
}

// Registry holds the Schema Registry connection settings.
type Registry struct {
	// URL is http:// or https:// (no default: set
	// ECST_SCHEMA_REGISTRY_URL); a user and password in it are sent as
	// basic auth.
	URL SecretURL `yaml:"url"`
	// Username and Password are basic auth credentials ("": none). The
	// password is never printed.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"` // see Username
	// TLS to the registry, beyond what https:// gives; off by default.
	TLS TLS `yaml:"tls"`
	// AutoRegister lets the producer register a schema it does not find.
	// Off by default: in production, schemas are registered by `ecst schema
	// register` after a compatibility check, never as a side effect.
	AutoRegister bool `yaml:"auto_register"`
}

// Outbox configures the outbox table's layout, shared by writers and relays.
type Outbox struct {
	// Shards splits the outbox by key hash, 1 (the default) to 256; each
	// shard has one relay leader.
	// Change it only with the outbox drained: a key that moves shards could
	// be published by two leaders at once.
	Shards int `yaml:"shards"`
	// Transport is how events travel from the writers to the relay: table
	// (rows in ecst.outbox) or wal (logical decoding messages, streamed
	// from a replication slot). Writers and relays must agree with the
	// database, which `ecst outbox switch` moves from one to the other.
	Transport string `yaml:"transport"`
}

// Transports.
const (
	TransportTable = "table"
	TransportWAL   = "wal"
)

// Relay configures `ecst relay`.
type Relay struct {
	// BatchSize is the most rows one Kafka transaction carries
	// (DefaultBatchSize, 2000).
	BatchSize int `yaml:"batch_size"`
	// BatchBytes caps a batch's total value size (DefaultBatchBytes,
	// 16 MiB).
	BatchBytes int `yaml:"batch_bytes"`
	// PollMin and PollMax bound the adaptive polling interval: PollMin
	// right after a batch (DefaultPollMin, 5ms), doubling on each empty
	// read up to PollMax (DefaultPollMax, 500ms).
	PollMin time.Duration `yaml:"poll_min"`
	PollMax time.Duration `yaml:"poll_max"` // see PollMin
	// LeaseTimeout is how long a leader may go without a heartbeat before
	// PostgreSQL ends its session, freeing the shard for a standby
	// (DefaultLeaseTimeout, 3s).
	LeaseTimeout time.Duration `yaml:"lease_timeout"`
	// OnReject is what to do with a record the broker rejects for good:
	// halt (the default: stop, loudly) or park (move it to
	// ecst.outbox_parked and go on).
	OnReject string `yaml:"on_reject"`
	// MetricsAddr serves /metrics, /healthz and /readyz
	// (DefaultMetricsAddr, ":9464"); "off" turns it off.
	MetricsAddr string `yaml:"metrics_addr"`
	// WALHeartbeat is how often a WAL relay leader writes a heartbeat
	// message, so that its slot advances on a database with no ecst
	// traffic (the WAL transport only).
	WALHeartbeat time.Duration `yaml:"wal_heartbeat"`
}

// Relay defaults.
const (
	DefaultBatchSize    = 2000
	DefaultBatchBytes   = 16 << 20
	DefaultPollMin      = 5 * time.Millisecond
	DefaultPollMax      = 500 * time.Millisecond
	DefaultLeaseTimeout = 3 * time.Second
	DefaultMetricsAddr  = ":9464"
	DefaultWALHeartbeat = 10 * time.Second
)

// Verify configures `ecst verify --every`, the continuous verification.
type Verify struct {
	// MetricsAddr serves /metrics and /healthz while it runs
	// (DefaultVerifyMetricsAddr, ":9465"); "off" turns it off.
	MetricsAddr string `yaml:"metrics_addr"`
}

// DefaultVerifyMetricsAddr is next to the relay's, so that both can run on
// one host.
const DefaultVerifyMetricsAddr = ":9465"

// Entity declares one entity type and its state topic.
type Entity struct {
	// Name is the key under entities; it prefixes the event types.
	Name string `yaml:"-"`
	// Topic is the log-compacted topic of the entity's state (required);
	// its value schema's subject is Topic + "-value".
	Topic string `yaml:"topic"`
	// Schema is the entity's .avsc file, relative to the config file
	// (required).
	Schema string `yaml:"schema"`
	// Compatibility is the subject's compatibility level
	// (DefaultCompatibility, FULL_TRANSITIVE).
	Compatibility string `yaml:"compatibility"`
	// Partitions are the topic's partitions when `ecst topics apply`
	// creates it (DefaultPartitions, 6).
	Partitions int `yaml:"partitions"`
	// ReplicationFactor is the topic's replicas (DefaultReplicationFactor,
	// -1: the broker's default.replication.factor).
	ReplicationFactor int `yaml:"replication_factor"`
	// TopicConfig overrides or adds topic configs (see DefaultTopicConfig).
	TopicConfig map[string]string `yaml:"topic_config"`
	// Source is the source of truth republish and verify read (nil: none;
	// they refuse the entity).
	Source *Source `yaml:"source"`

	// SchemaText is the .avsc file's content, read during validation.
	SchemaText string `yaml:"-"`
	// SchemaPath is Schema resolved against the config file's directory.
	SchemaPath string `yaml:"-"`
}

// DefaultTopicConfig is what `ecst topics apply` sets on every state topic
// unless the entity's topic_config says otherwise.
var DefaultTopicConfig = map[string]string{
	// The point of a state topic: keep the latest record per key.
	"cleanup.policy": "compact",
	// Compact as soon as the cleaner may; readers that need every
	// intermediate state are not what a state topic is for.
	"min.compaction.lag.ms": "0",
	// How long a tombstone outlives compaction. A consumer replaying from
	// offset 0 more slowly than this may miss a deletion; verify catches it.
	"delete.retention.ms": "604800000", // 7 days
	// The active segment is never compacted: roll daily so that
	// superseded states go within a day or so.
	"segment.ms": "86400000",
	// Kafka's own default, stated so that drift is visible.
	"max.message.bytes": "1048588",
}

// WantTopicConfig is DefaultTopicConfig with the entity's overrides.
func (e *Entity) WantTopicConfig() map[string]string {
	m := make(map[string]string, len(DefaultTopicConfig)+len(e.TopicConfig))
	for k, v := range DefaultTopicConfig {
		m[k] = v
	}
	for k, v := range e.TopicConfig {
		m[k] = v
	}
	return m
}

// Subject is the registry subject of the entity's value schema
// (TopicNameStrategy).
func (e *Entity) Subject() string { return e.Topic + "-value" }

// Source is where republish and verify read the source of truth.
type Source struct {
	// Table is the source table, table or schema.table; required unless
	// Query is given.
	Table string `yaml:"table"`
	// Key is the column holding the entity id, the Kafka key (required).
	Key string `yaml:"key"`
	// Version is the column holding the entity version, for the
	// ecst-entity-version header ("": none).
	Version string `yaml:"version"`
	// Query selects the full state; it defaults to SELECT * FROM Table.
	Query string `yaml:"query"`
	// CaptureFrom are the other tables whose writes change the entity's
	// state, for a query that joins several: `ecst capture enable` installs
	// its triggers on Table and on each of these (none by default).
	CaptureFrom []CaptureFrom `yaml:"capture_from"`
}

// CaptureFrom is a table a source query reads besides the source table.
type CaptureFrom struct {
	// Table is the table, table or schema.table, as in SQL (required).
	Table string `yaml:"table"`
	// Key is its column holding the entity id: a write to a row captures
	// the entity of that id (required).
	Key string `yaml:"key"`
}

// Load reads path, applies environment overrides and defaults, and
// validates. An empty path means DefaultFile if it exists, else no file:
// commands that need no entities (migrate, say) then run on environment
// variables and flags alone.
func Load(path string, env func(string) string) (*Config, error) {
	explicit := path != ""
	if !explicit {
		path = DefaultFile
	}
	cfg := &Config{}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if cfg, err = Parse(data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cfg.Path = path
	case errors.Is(err, os.ErrNotExist) && !explicit:
		// No file: everything comes from the environment and flags.
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("config file %s does not exist: create it (see examples/customers/ecst.yaml) or pass --config", path)
	default:
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := ApplyEnv(cfg, env); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML strictly: an unknown key is an error that names it.
// It does not validate; call Finish after applying overrides.
func Parse(data []byte) (*Config, error) {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, explainYAML(err, data)
	}
	return cfg, nil
}

var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)

func parseUnknownField(msg string) (field, typ string, ok bool) {
	m := unknownFieldRE.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

func knownKeys(typ string) []string {
	keys := map[string][]string{
		"Config":      {"service", "database", "kafka", "schema_registry", "outbox", "relay", "verify", "entities"},
		"Outbox":      {"shards", "transport"},
		"Relay":       {"batch_size", "batch_bytes", "poll_min", "poll_max", "lease_timeout", "on_reject", "metrics_addr", "wal_heartbeat"},
		"Verify":      {"metrics_addr"},
		"Database":    {"url", "sslmode"},
		"Kafka":       {"brokers", "client_id", "tls", "sasl"},
		"TLS":         {"enabled", "ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"},
		"SASL":        {"mechanism", "username", "password"},
		"Registry":    {"url", "username", "password", "tls", "auto_register"},
		"Entity":      {"topic", "schema", "compatibility", "partitions", "replication_factor", "topic_config", "source"},
		"Source":      {"table", "key", "version", "query", "capture_from"},
		"CaptureFrom": {"table", "key"},
	}
	return keys[typ]
}

var (
	entityNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	topicRE      = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	sslModes     = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
)

// Finish fills defaults, reads each entity's schema file and validates the
// whole config. All problems are reported together, one per line.
func (c *Config) Finish() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	dir := "."
	if c.Path != "" {
		dir = filepath.Dir(c.Path)
	}

	if c.Database.SSLMode != "" && !slices.Contains(sslModes, c.Database.SSLMode) {
		add("database.sslmode", "%q is not a PostgreSQL sslmode; use one of %s", c.Database.SSLMode, strings.Join(sslModes, ", "))
	}
	errs = append(errs, c.Kafka.validate()...)
	errs = append(errs, c.Registry.validate()...)
	errs = append(errs, c.Outbox.finish()...)
	errs = append(errs, c.Relay.finish()...)
	c.Verify.finish()

	topics := map[string]string{}
	for _, name := range c.EntityNames() {
		e := c.Entities[name]
		f := "entities." + name
		if e == nil {
			add(f, "is empty; give it at least a topic and a schema")
			continue
		}
		e.Name = name
		if !entityNameRE.MatchString(name) {
			add(f, "entity names are lowercase letters, digits and _, starting with a letter (they prefix event types such as %s.upserted)", strings.ToLower(name))
		}
		if e.Compatibility == "" {
			e.Compatibility = DefaultCompatibility
		}
		e.Compatibility = strings.ToUpper(e.Compatibility)
		if !slices.Contains(CompatibilityLevels, e.Compatibility) {
			add(f+".compatibility", "%q is not a compatibility level; use one of %s (state topics want FULL_TRANSITIVE)", e.Compatibility, strings.Join(CompatibilityLevels, ", "))
		}
		if e.Partitions == 0 {
			e.Partitions = DefaultPartitions
		}
		if e.Partitions < 1 {
			add(f+".partitions", "must be at least 1, got %d", e.Partitions)
		}
		if e.ReplicationFactor == 0 {
			e.ReplicationFactor = DefaultReplicationFactor
		}
		if e.ReplicationFactor < -1 {
			add(f+".replication_factor", "must be -1 (the broker's default) or at least 1, got %d", e.ReplicationFactor)
		}
		switch {
		case e.Topic == "":
			add(f+".topic", "is required: name the compacted topic that carries this entity's state, for example %s.state", name)
		case !topicRE.MatchString(e.Topic):
			add(f+".topic", "%q is not a valid Kafka topic name (letters, digits, '.', '_' and '-', at most 249)", e.Topic)
		case topics[e.Topic] != "":
			add(f+".topic", "topic %q is also used by entity %q; each entity needs a topic of its own, because consumers decode a topic with one schema", e.Topic, topics[e.Topic])
		default:
			topics[e.Topic] = name
		}
		if p, ok := e.TopicConfig["cleanup.policy"]; ok && p != "compact" {
			add(f+".topic_config.cleanup.policy", "%q: a state topic must be compacted (cleanup.policy=compact), or replays lose entities", p)
		}
		if err := e.loadSchema(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s.schema: %w", f, err))
		}
		if e.Source != nil {
			errs = append(errs, e.Source.validate(f+".source")...)
		}
	}
	return errors.Join(errs...)
}

// EntityNames returns the entity names in sorted order.
func (c *Config) EntityNames() []string {
	names := make([]string, 0, len(c.Entities))
	for n := range c.Entities {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Entity returns the named entity, or an error listing the known ones.
func (c *Config) Entity(name string) (*Entity, error) {
	if e, ok := c.Entities[name]; ok && e != nil {
		return e, nil
	}
	known := c.EntityNames()
	if len(known) == 0 {
		return nil, fmt.Errorf("unknown entity %q: no entities are declared (is --config pointing at your ecst.yaml?)", name)
	}
	return nil, fmt.Errorf("unknown entity %q: declared entities are %s", name, strings.Join(known, ", "))
}

func (e *Entity) loadSchema(dir string) error {
	if e.Schema == "" {
		return errors.New("is required: the path of the entity's .avsc file, relative to ecst.yaml")
	}
	p := e.Schema
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("file %s does not exist; fix the path (relative paths start at the config file's directory) or create the schema", p)
		}
		return fmt.Errorf("read %s: %w", p, err)
	}
	s, err := ParseSchemaFile(p, data)
	if err != nil {
		return err
	}
	if s.Type() != avro.Record {
		return fmt.Errorf("%s has top-level type %s; an entity's state must be an Avro record", p, s.Type())
	}
	e.SchemaPath, e.SchemaText = p, string(data)
	return nil
}

func (s *Source) validate(f string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if s.Table == "" && s.Query == "" {
		add(f+".table", "is required (or give a query): the source-of-truth table republish and verify read")
	}
	// The table is read as `ecst mirror --table` reads one: as in SQL.
	table, err := pgident.Parse(s.Table)
	if s.Table != "" && err != nil {
		add(f+".table", "%v", err)
	}
	if s.Key == "" {
		add(f+".key", "is required: the column that holds the entity id (the Kafka key)")
		return errs
	}
	if s.Query == "" {
		if err != nil {
			return errs
		}
		s.Query = "SELECT * FROM " + table.Quoted()
	}
	for i, c := range s.CaptureFrom {
		cf := fmt.Sprintf("%s.capture_from[%d]", f, i)
		if c.Table == "" {
			add(cf+".table", "is required: a table the source query reads")
		} else if _, err := pgident.Parse(c.Table); err != nil {
			add(cf+".table", "%v", err)
		}
		if c.Key == "" {
			add(cf+".key", "is required: the column of %s that holds the entity id", c.Table)
		}
	}
	cols, star, err := selectColumns(s.Query)
	if err != nil {
		add(f+".query", "%v", err)
		return errs
	}
	if star {
		return errs
	}
	// Columns are matched regardless of case, as the source's columns are
	// matched to the schema's fields.
	selects := func(col string) bool {
		return slices.ContainsFunc(cols, func(c string) bool { return strings.EqualFold(c, col) })
	}
	if !selects(s.Key) {
		add(f+".query", "does not select the key column %q (it selects %s); add %s to the select list", s.Key, strings.Join(cols, ", "), s.Key)
	}
	if s.Version != "" && !selects(s.Version) {
		add(f+".query", "does not select the version column %q (it selects %s); add %s to the select list", s.Version, strings.Join(cols, ", "), s.Version)
	}
	return errs
}

func (o *Outbox) finish() []error {
	if o.Shards == 0 {
		o.Shards = 1
	}
	var errs []error
	if o.Shards < 1 || o.Shards > 256 {
		errs = append(errs, fmt.Errorf("outbox.shards: must be from 1 to 256, got %d", o.Shards))
	}
	if o.Transport == "" {
		o.Transport = TransportTable
	}
	if o.Transport != TransportTable && o.Transport != TransportWAL {
		errs = append(errs, fmt.Errorf("outbox.transport: %q is not table or wal", o.Transport))
	}
	return errs
}

func (r *Relay) finish() []error {
	var errs []error
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&r.BatchSize, DefaultBatchSize)
	def(&r.BatchBytes, DefaultBatchBytes)
	defDur(&r.PollMin, DefaultPollMin)
	defDur(&r.PollMax, DefaultPollMax)
	defDur(&r.LeaseTimeout, DefaultLeaseTimeout)
	defDur(&r.WALHeartbeat, DefaultWALHeartbeat)
	if r.MetricsAddr == "" {
		r.MetricsAddr = DefaultMetricsAddr
	}
	if r.MetricsAddr == "off" {
		r.MetricsAddr = ""
	}
	if r.OnReject == "" {
		r.OnReject = "halt"
	}
	if r.BatchSize < 1 || r.BatchSize > 100_000 {
		errs = append(errs, fmt.Errorf("relay.batch_size: must be from 1 to 100000, got %d", r.BatchSize))
	}
	if r.BatchBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("relay.batch_bytes: must be at least 1 MiB (1048576), got %d", r.BatchBytes))
	}
	if r.PollMin <= 0 || r.PollMax < r.PollMin {
		errs = append(errs, fmt.Errorf("relay.poll_min, relay.poll_max: need 0 < poll_min <= poll_max, got %v and %v", r.PollMin, r.PollMax))
	}
	if r.LeaseTimeout < time.Second {
		errs = append(errs, fmt.Errorf("relay.lease_timeout: must be at least 1s, got %v (the leader heartbeats every third of it)", r.LeaseTimeout))
	}
	if r.WALHeartbeat < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("relay.wal_heartbeat: must be at least 100ms, got %v", r.WALHeartbeat))
	}
	if r.OnReject != "halt" && r.OnReject != "park" {
		errs = append(errs, fmt.Errorf("relay.on_reject: %q is not halt or park", r.OnReject))
	}
	return errs
}

func (v *Verify) finish() {
	if v.MetricsAddr == "" {
		v.MetricsAddr = DefaultVerifyMetricsAddr
	}
	if v.MetricsAddr == "off" {
		v.MetricsAddr = ""
	}
}

func (k *Kafka) validate() []error {
	var errs []error
	for i, b := range k.Brokers {
		if strings.TrimSpace(b) == "" || strings.Contains(b, "://") {
			errs = append(errs, fmt.Errorf("kafka.brokers[%d]: %q is not host:port; list brokers as host:port without a scheme", i, b))
		}
	}
	errs = append(errs, k.TLS.validate("kafka.tls")...)
	switch strings.ToUpper(k.SASL.Mechanism) {
	case "":
		if k.SASL.Username != "" || k.SASL.Password != "" {
			errs = append(errs, errors.New("kafka.sasl.mechanism: is empty but a username or password is set; set mechanism to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		k.SASL.Mechanism = strings.ToUpper(k.SASL.Mechanism)
		if k.SASL.Username == "" {
			errs = append(errs, fmt.Errorf("kafka.sasl.username: is required with mechanism %s (ECST_KAFKA_SASL_USERNAME)", k.SASL.Mechanism))
		}
		if k.SASL.Password == "" {
			errs = append(errs, fmt.Errorf("kafka.sasl.password: is required with mechanism %s; set ECST_KAFKA_SASL_PASSWORD rather than writing it in the file", k.SASL.Mechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka.sasl.mechanism: %q is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASL.Mechanism))
	}
	return errs
}

func (r *Registry) validate() []error {
	var errs []error
	if u := r.URL.Reveal(); u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		errs = append(errs, fmt.Errorf("schema_registry.url: %q must start with http:// or https://", r.URL.String()))
	}
	if r.Password != "" && r.Username == "" {
		errs = append(errs, errors.New("schema_registry.username: is required when a password is set (basic auth)"))
	}
	return append(errs, r.TLS.validate("schema_registry.tls")...)
}

func (t *TLS) validate(f string) []error {
	var errs []error
	for _, file := range []struct{ field, path string }{
		{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile},
	} {
		if file.path == "" {
			continue
		}
		if _, err := os.Stat(file.path); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: cannot read %s: %w", f, file.field, file.path, errors.Unwrap(err)))
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%s: cert_file and key_file go together (a client certificate needs its key)", f))
	}
	return errs
}
