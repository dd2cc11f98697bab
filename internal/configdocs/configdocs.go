// Package configdocs writes docs/config.md, the ecst.yaml reference, from
// the config package: the keys are config.Config's yaml tags, the defaults
// what Config.Finish fills in, the variables and flags config.Overrides. Only
// what a key means is written here, in Docs, and a test fails when a key has
// no entry or an entry no key: a key cannot be added undocumented.
package configdocs

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ecst-io/ecst/config"
)

// File is the reference, relative to the repository root.
const File = "docs/config.md"

// Key is one ecst.yaml key as the reference shows it.
type Key struct {
	Path     string // relay.batch_size; entities.<name>.topic
	Type     string
	Default  string // "" when none
	Required bool   // Finish refuses a config without it
	Env      string // the ECST_* variable, if any
	Flag     string // the command-line flag, if any
	Doc      string
}

// Docs says what each key means, keyed by path. Everything else in the
// reference comes from the config package.
var Docs = map[string]string{
	"service": "The producing service: the `ecst-source` header of its events, and part of the relay's Kafka transactional ids (`ecst-relay.<service>.<shard>`).",

	"database":         "The service's PostgreSQL database: its own tables, the `ecst` schema (`ecst migrate`) and the read models of `ecst mirror`.",
	"database.url":     "A `postgres://` URL or a libpq `key=value` string. Keep a password out of the file: set `ECST_DATABASE_URL`. Printed with any password replaced.",
	"database.sslmode": "Overrides the URL's `sslmode`: disable, allow, prefer, require, verify-ca or verify-full.",

	"kafka":                          "The Kafka cluster.",
	"kafka.brokers":                  "Seed brokers, `host:port` without a scheme; comma-separated in the variable and the flag.",
	"kafka.client_id":                "The client id ecst's Kafka clients send (franz-go's `kgo` when empty).",
	"kafka.tls":                      "TLS to the brokers.",
	"kafka.tls.enabled":              "Use TLS. Setting `ca_file`, `cert_file`, `server_name` or `insecure_skip_verify` turns it on too.",
	"kafka.tls.ca_file":              "PEM bundle of the certificate authorities to trust (the system's when empty).",
	"kafka.tls.cert_file":            "PEM client certificate, for mutual TLS; goes with `key_file`.",
	"kafka.tls.key_file":             "PEM key of `cert_file`.",
	"kafka.tls.server_name":          "The name the brokers' certificates are checked against, when it is not the host dialled.",
	"kafka.tls.insecure_skip_verify": "Do not check the brokers' certificates. Only for tests.",
	"kafka.sasl":                     "SASL authentication to the brokers.",
	"kafka.sasl.mechanism":           "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.",
	"kafka.sasl.username":            "The SASL user; required with a mechanism.",
	"kafka.sasl.password":            "The SASL password; required with a mechanism. Never printed, and no flag: set `ECST_KAFKA_SASL_PASSWORD` rather than writing it in the file.",

	"schema_registry":                          "The Confluent-compatible Schema Registry.",
	"schema_registry.url":                      "`http://` or `https://`. A user and password in the URL are sent as basic auth, never in a request URL.",
	"schema_registry.username":                 "Basic auth user.",
	"schema_registry.password":                 "Basic auth password. Never printed, and no flag.",
	"schema_registry.tls":                      "TLS to the registry, beyond what `https://` gives.",
	"schema_registry.tls.enabled":              "Use TLS. Setting `ca_file`, `cert_file`, `server_name` or `insecure_skip_verify` turns it on too.",
	"schema_registry.tls.ca_file":              "PEM bundle of the certificate authorities to trust (the system's when empty).",
	"schema_registry.tls.cert_file":            "PEM client certificate, for mutual TLS; goes with `key_file`.",
	"schema_registry.tls.key_file":             "PEM key of `cert_file`.",
	"schema_registry.tls.server_name":          "The name the registry's certificate is checked against, when it is not the host dialled.",
	"schema_registry.tls.insecure_skip_verify": "Do not check the registry's certificate. Only for tests.",
	"schema_registry.auto_register":            "Let the producer register a schema the registry does not have. For dev stacks: in production `ecst schema register` registers, after a compatibility check.",

	"outbox":           "The outbox table's layout, shared by the writers and the relays.",
	"outbox.shards":    "Splits the outbox by key hash, 1 to 256; each shard has one relay leader. Change it only with the outbox drained: a key that moved shards could be published by two leaders at once. The WAL transport has no shards: one relay leader streams the slot.",
	"outbox.transport": "How events travel from writers to the relay: `table` (rows in `ecst.outbox`) or `wal` (logical decoding messages in the WAL, streamed from a replication slot; needs `wal_level = logical`). Writers, relays and the database must agree: the database records its transport, a writer or relay that disagrees fails with an error naming `ecst outbox switch`, which moves a running system from one to the other. See docs/architecture.md and docs/operations.md.",

	"relay":               "How `ecst relay` reads the outbox and publishes it.",
	"relay.batch_size":    "The most rows one Kafka transaction carries, 1 to 100000.",
	"relay.batch_bytes":   "The most value bytes one batch carries, at least 1 MiB (1048576); the default is 16 MiB.",
	"relay.poll_min":      "The wait before the next read right after a batch; it doubles on each empty read, up to `poll_max`.",
	"relay.poll_max":      "The longest wait between two reads of an idle outbox.",
	"relay.lease_timeout": "How long a leader may go without a heartbeat before PostgreSQL ends its session and a standby takes its shard; at least 1s.",
	"relay.on_reject":     "A record the broker refuses for good (too large, say): `halt` stops the relay with an error naming the row; `park` moves it to `ecst.outbox_parked`, counts it and goes on.",
	"relay.metrics_addr":  "Where `/metrics`, `/healthz` and `/readyz` are served; `off` serves none.",
	"relay.wal_heartbeat": "The WAL transport only: how often the relay leader writes a heartbeat message into the WAL. It comes back through the slot, so the slot advances (and frees WAL) on a database with no ecst traffic, and `ecst_relay_slot_lag_seconds` is measured by it.",

	"verify":              "How `ecst verify --every` runs.",
	"verify.metrics_addr": "Where `ecst verify --every` serves `/metrics` (what each run found, when the last one finished, and the state of the republish runs) and `/healthz`; `off` serves neither. Next to the relay's default, so that both can run on one host.",

	"entities":                            "The entity types the service publishes, by name.",
	"entities.<name>":                     "One entity type. `<name>` is lowercase letters, digits and `_`, starting with a letter; it prefixes the event types (`<name>.upserted`, `<name>.deleted`) and names the entity on the command line.",
	"entities.<name>.topic":               "The log-compacted topic that carries the entity's state, one per entity. Its value schema is registered under `<topic>-value`.",
	"entities.<name>.schema":              "The entity's Avro schema (a record), an `.avsc` file; a relative path starts at the directory of `ecst.yaml`.",
	"entities.<name>.compatibility":       "The compatibility level `ecst schema register` sets on `<topic>-value`: " + strings.Join(config.CompatibilityLevels, ", ") + ".",
	"entities.<name>.partitions":          "The partitions `ecst topics apply` creates the topic with. Never changed afterwards: that would move keys to other partitions and break their order.",
	"entities.<name>.replication_factor":  "The topic's replicas; -1 is the broker's `default.replication.factor`.",
	"entities.<name>.topic_config":        "Topic configs to add or override, name to value; see [Topic configs](#topic-configs). `cleanup.policy` must stay `compact`.",
	"entities.<name>.source":              "The source of truth that `ecst republish` and `ecst verify` read; they refuse an entity without one.",
	"entities.<name>.source.table":        "The table, `table` or `schema.table`, written as in SQL: unquoted it folds to lower case, double-quoted (`'\"Book Store\".books'`) it is kept as it is; required unless `query` is given.",
	"entities.<name>.source.key":          "The column holding the entity id, the Kafka key; matched to the query's columns regardless of case.",
	"entities.<name>.source.version":      "The column holding the entity version, for the `ecst-entity-version` header; matched regardless of case.",
	"entities.<name>.source.query":        "The query that selects each entity's full state; its columns feed the schema's fields by name.",
	"entities.<name>.source.capture_from": "For `ecst capture enable`: the other tables the query reads, whose writes change the entity's state, as a list of `{table: order_lines, key: order_id}`: `table` written as in SQL like `source.table`, `key` its column holding the entity id. Capture installs its triggers on `table` and on each of these.",
}

// sample is the entity Keys finishes a config with, to find the defaults
// and the required keys; its values stand for placeholders in the output.
const sampleName = "sample"

var sampleValues = map[string]string{
	"topic":        "sample.state",
	"schema":       "sample.avsc",
	"source.table": "sample_table",
	"source.key":   "sample_key",
}

// Keys lists every key of ecst.yaml in the order of the config structs.
func Keys() ([]Key, error) {
	var keys []Key
	index := map[string]int{}
	walk(reflect.ValueOf(&config.Config{}).Elem(), "", func(path string, v reflect.Value) {
		index[path] = len(keys)
		keys = append(keys, Key{Path: path, Type: typeName(v.Type()), Doc: Docs[path]})
	})

	defaults, required, err := finished()
	if err != nil {
		return nil, err
	}
	for path, d := range defaults {
		keys[index[path]].Default = d
	}
	for _, path := range required {
		keys[index[path]].Required = true
	}

	for _, o := range config.Overrides {
		path, err := overridden(o)
		if err != nil {
			return nil, err
		}
		k := &keys[index[path]]
		if k.Env != "" {
			return nil, fmt.Errorf("%s and %s both set %s", k.Env, o.Env, path)
		}
		k.Env = o.Env
		if o.Flag != "" {
			k.Flag = "--" + o.Flag
		}
	}
	return keys, nil
}

// walk calls visit for every key under v: structs by their yaml tags,
// entities under "entities.<name>".
func walk(v reflect.Value, prefix string, visit func(path string, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || name == "" || !f.IsExported() {
			continue
		}
		path := prefix + name
		fv := v.Field(i)
		visit(path, fv)
		switch {
		case fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]():
			walk(fv, path+".", visit)
		case fv.Kind() == reflect.Pointer && fv.Type().Elem().Kind() == reflect.Struct:
			if fv.IsNil() {
				fv = reflect.New(fv.Type().Elem())
			}
			walk(fv.Elem(), path+".", visit)
		case fv.Kind() == reflect.Map && fv.Type().Elem().Kind() == reflect.Pointer:
			// entities: name → *Entity. The sample entity when there is
			// one, an empty one otherwise.
			ev := reflect.New(fv.Type().Elem().Elem())
			if e := fv.MapIndex(reflect.ValueOf(sampleName)); e.IsValid() && !e.IsNil() {
				ev = e
			}
			visit(path+".<name>", ev)
			walk(ev.Elem(), path+".<name>.", visit)
		}
	}
}

// leaves are the values of the keys that hold values, by path.
func leaves(c *config.Config) map[string]reflect.Value {
	m := map[string]reflect.Value{}
	walk(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct, reflect.Pointer:
			return
		case reflect.Map:
			if v.Type().Elem().Kind() == reflect.Pointer {
				return
			}
		}
		m[path] = v
	})
	return m
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t == reflect.TypeFor[config.Secret]() || t == reflect.TypeFor[config.SecretURL]():
		return "string, secret"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Slice:
		return "list of " + typeName(t.Elem()) + "s"
	case reflect.Map:
		if t.Elem().Kind() == reflect.Pointer {
			return "map of name to " + strings.ToLower(t.Elem().Elem().Name())
		}
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	case reflect.Struct, reflect.Pointer:
		return "section"
	}
	return t.String()
}

func format(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	}
	return fmt.Sprint(v.Interface())
}

// finished runs Finish on a config holding only the sample entity: what it
// filled in are the defaults. Then, for each value the sample had to give,
// Finish on a config without it says whether it is required.
func finished() (defaults map[string]string, required []string, err error) {
	dir, err := os.MkdirTemp("", "ecst-configdocs-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	schema := `{"type": "record", "name": "Sample", "fields": [{"name": "sample_key", "type": "string"}]}`
	if err := os.WriteFile(filepath.Join(dir, sampleValues["schema"]), []byte(schema), 0o644); err != nil {
		return nil, nil, err
	}
	sample := func(without string) *config.Config {
		c := &config.Config{Path: filepath.Join(dir, "ecst.yaml"), Entities: map[string]*config.Entity{sampleName: {Source: &config.Source{}}}}
		for path, v := range leaves(c) {
			field := strings.TrimPrefix(path, "entities.<name>.")
			if val, ok := sampleValues[field]; ok && field != without {
				v.SetString(val)
			}
		}
		return c
	}

	before := sample("")
	given := map[string]string{}
	for path, v := range leaves(before) {
		given[path] = format(v)
	}
	if err := before.Finish(); err != nil {
		return nil, nil, fmt.Errorf("finish the sample config: %w", err)
	}
	defaults = map[string]string{}
	for path, v := range leaves(before) {
		if d := format(v); d != given[path] && !v.IsZero() {
			// The sample's own values stand for placeholders: SELECT * FROM "<table>".
			for field, val := range sampleValues {
				d = strings.ReplaceAll(d, val, "<"+field[strings.LastIndex(field, ".")+1:]+">")
			}
			defaults[path] = d
		}
	}

	for _, field := range slices.Sorted(maps.Keys(sampleValues)) {
		err := sample(field).Finish()
		path := "entities." + sampleName + "." + field
		if err != nil && strings.Contains(err.Error(), path+": is required") {
			required = append(required, "entities.<name>."+field)
		}
	}
	return defaults, required, nil
}

// overridden finds the key a variable sets, by setting it on an empty
// config and looking for what changed.
func overridden(o config.Override) (string, error) {
	c := &config.Config{}
	if err := o.Set(c, "1"); err != nil { // a string, a number and true
		return "", fmt.Errorf("%s: %w", o.Env, err)
	}
	var changed []string
	for path, v := range leaves(c) {
		if !v.IsZero() {
			changed = append(changed, path)
		}
	}
	if len(changed) != 1 {
		return "", fmt.Errorf("%s sets %d keys (%v); the reference expects one", o.Env, len(changed), changed)
	}
	return changed[0], nil
}

// Check reports the keys that Docs does not describe and the Docs entries
// that are no key.
func Check(keys []Key) error {
	var errs []error
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k.Path] = true
		if strings.TrimSpace(k.Doc) == "" {
			errs = append(errs, fmt.Errorf("%s: not documented; describe it in configdocs.Docs (internal/configdocs), then `make docs`", k.Path))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(Docs)) {
		if !seen[p] {
			errs = append(errs, fmt.Errorf("%s: documented in configdocs.Docs, but ecst.yaml has no such key", p))
		}
	}
	return errors.Join(errs...)
}

// Write generates the reference into path.
func Write(path string) error {
	keys, err := Keys()
	if err != nil {
		return fmt.Errorf("list the ecst.yaml keys: %w", err)
	}
	if err := os.WriteFile(path, []byte(Markdown(keys)), 0o644); err != nil {
		return fmt.Errorf("write the ecst.yaml reference: %w", err)
	}
	return nil
}

// Example is the smallest useful ecst.yaml, shown at the top of the reference.
const Example = `service: shop
entities:
  book:
    topic: shop.books
    schema: book.avsc          # relative to this file
    source:                    # for ecst republish and ecst verify
      table: books
      key: id
      version: version
`

const intro = "# `ecst.yaml` reference\n\n" +
	"<!-- Generated by `make docs` from the config package (internal/configdocs): edit the\n" +
	"descriptions there. A test fails when this file is stale or a key is undocumented. -->\n\n" +
	"ecst reads `./ecst.yaml`, or the file `--config` names; then `ECST_*` environment\n" +
	"variables; then flags, each overriding the one before. A key ecst does not know is an\n" +
	"error that names it. `ecst config show` validates the result and prints it with every\n" +
	"credential redacted. Durations are written as Go writes them (`500ms`, `3s`, `1m`).\n" +
	"Credentials have no flags (a flag shows in the process list) and are never printed.\n\n" +
	"A minimal file; the connection settings come from the environment (`ECST_DATABASE_URL`,\n" +
	"`ECST_BROKERS`, `ECST_SCHEMA_REGISTRY_URL`, which `ecst dev` prints):\n\n" +
	"```yaml\n" + Example + "```\n\n" +
	"[examples/customers/ecst.yaml](../examples/customers/ecst.yaml) is a fuller one, and\n" +
	"[docs/dev.md](dev.md#your-own-entity-in-ten-minutes) walks through one from an empty\n" +
	"database to a verified read model.\n"

const topicConfigs = "\n## Topic configs\n\n" +
	"`ecst topics apply` sets these on every entity's topic, unless `entities.<name>.topic_config`\n" +
	"says otherwise; an existing topic whose configs differ is reported as drift (`--fix`\n" +
	"aligns it).\n\n" +
	"| config | value |\n|---|---|\n"

// Markdown renders the reference: a table per top-level key, then the
// topic configs.
func Markdown(keys []Key) string {
	var b strings.Builder
	b.WriteString(intro)
	var section string
	for _, k := range keys {
		top, _, _ := strings.Cut(k.Path, ".")
		group := k.Type == "section" || strings.HasPrefix(k.Type, "map of name")
		if top != section {
			section = top
			fmt.Fprintf(&b, "\n## `%s`\n\n", top)
			if group {
				fmt.Fprintf(&b, "%s\n\n", k.Doc)
			}
			b.WriteString("| key | type | default | variable | flag | meaning |\n|---|---|---|---|---|---|\n")
			if group {
				continue
			}
		}
		def := code(k.Default)
		switch {
		case k.Required:
			def = "required"
		case k.Default == "" && k.Type == "boolean":
			def = "`false`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", k.Path, k.Type, def, code(k.Env), code(k.Flag), cell(k.Doc))
	}
	b.WriteString(topicConfigs)
	for _, name := range slices.Sorted(maps.Keys(config.DefaultTopicConfig)) {
		fmt.Fprintf(&b, "| `%s` | `%s` |\n", name, config.DefaultTopicConfig[name])
	}
	return b.String()
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
