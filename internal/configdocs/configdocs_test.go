package configdocs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/configdocs"
	"github.com/ecst-io/ecst/internal/testkit"
)

// TestReferenceIsCurrent regenerates docs/config.md and compares: a key,
// default, variable or flag changed without `make docs` fails here.
func TestReferenceIsCurrent(t *testing.T) {
	t.Parallel()
	keys, err := configdocs.Keys()
	if err != nil {
		t.Fatal(err)
	}
	want := configdocs.Markdown(keys)
	have, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(configdocs.File)))
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != want {
		t.Fatalf("%s is out of date; run `make docs` and commit the result. It differs at %s", configdocs.File, testkit.FirstDiff(string(have), want))
	}
}

// TestEveryKeyDocumented: every key of the config structs has a
// description, and every description a key.
func TestEveryKeyDocumented(t *testing.T) {
	t.Parallel()
	keys, err := configdocs.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if err := configdocs.Check(keys); err != nil {
		t.Fatal(err)
	}
	// Check itself: a key with no description, and a description with no key.
	undocumented := append(keys[:len(keys):len(keys)], configdocs.Key{Path: "relay.new_knob"})
	if err := configdocs.Check(undocumented); err == nil || !strings.Contains(err.Error(), "relay.new_knob: not documented") {
		t.Errorf("an undocumented key passes: %v", err)
	}
	if err := configdocs.Check(keys[1:]); err == nil || !strings.Contains(err.Error(), keys[0].Path+": documented") {
		t.Errorf("a description of no key passes: %v", err)
	}
}

// TestKeysComeFromTheCode: the defaults are Finish's, the variables and
// flags config.Overrides', and the required keys those Finish refuses to
// go without.
func TestKeysComeFromTheCode(t *testing.T) {
	t.Parallel()
	keys, err := configdocs.Keys()
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]configdocs.Key{}
	for _, k := range keys {
		byPath[k.Path] = k
	}
	for _, want := range []configdocs.Key{
		{Path: "service", Type: "string", Env: "ECST_SERVICE", Flag: "--service"},
		{Path: "kafka.brokers", Type: "list of strings", Env: "ECST_BROKERS", Flag: "--brokers"},
		{Path: "kafka.sasl.password", Type: "string, secret", Env: "ECST_KAFKA_SASL_PASSWORD"},
		{Path: "outbox.shards", Type: "integer", Default: "1", Env: "ECST_OUTBOX_SHARDS"},
		{Path: "relay.batch_size", Type: "integer", Default: "2000"},
		{Path: "relay.batch_bytes", Type: "integer", Default: "16777216"},
		{Path: "relay.poll_min", Type: "duration", Default: config.DefaultPollMin.String()},
		{Path: "relay.lease_timeout", Type: "duration", Default: "3s"},
		{Path: "relay.on_reject", Type: "string", Default: "halt", Env: "ECST_RELAY_ON_REJECT"},
		{Path: "relay.metrics_addr", Type: "string", Default: ":9464", Env: "ECST_METRICS_ADDR", Flag: "--metrics-addr"},
		{Path: "entities.<name>.topic", Type: "string", Required: true},
		{Path: "entities.<name>.schema", Type: "string", Required: true},
		{Path: "entities.<name>.compatibility", Type: "string", Default: "FULL_TRANSITIVE"},
		{Path: "entities.<name>.partitions", Type: "integer", Default: "6"},
		{Path: "entities.<name>.replication_factor", Type: "integer", Default: "-1"},
		{Path: "entities.<name>.topic_config", Type: "map of string to string"},
		{Path: "entities.<name>.source.key", Type: "string", Required: true},
		{Path: "entities.<name>.source.version", Type: "string"},
		{Path: "entities.<name>.source.query", Type: "string", Default: `SELECT * FROM "<table>"`},
	} {
		got, ok := byPath[want.Path]
		if !ok {
			t.Errorf("%s: not listed", want.Path)
			continue
		}
		got.Doc = ""
		if got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", want.Path, got, want)
		}
	}
	envs := 0
	for _, k := range keys {
		if k.Env != "" {
			envs++
		}
	}
	if envs != len(config.Overrides) {
		t.Errorf("%d keys have a variable; config.Overrides has %d", envs, len(config.Overrides))
	}
}

// TestExampleIsValid: the file at the top of the reference parses, keys
// and all.
func TestExampleIsValid(t *testing.T) {
	t.Parallel()
	c, err := config.Parse([]byte(configdocs.Example))
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Entities["book"]; e == nil || e.Source == nil || e.Source.Version != "version" {
		t.Fatalf("example parsed as %+v", c)
	}
}
