package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ecst-io/ecst/internal/cli"
)

const (
	schemaV1 = `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"}]}`
	// v2 adds an optional field: compatible under FULL_TRANSITIVE.
	schemaV2 = `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"},{"name":"tier","type":["null","string"],"default":null}]}`
	// broken adds a required field.
	schemaBroken = `{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"},{"name":"tier","type":"string"}]}`
)

// schemaProject writes an ecst.yaml with one entity and its schema file.
func schemaProject(t *testing.T, schema string) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	os.MkdirAll(filepath.Join(dir, "schemas"), 0o755)
	writeSchema(t, dir, schema)
	cfg = filepath.Join(dir, "ecst.yaml")
	os.WriteFile(cfg, []byte("service: s\nentities:\n  customer:\n    topic: customers.state\n    schema: schemas/customer.avsc\n"), 0o644)
	return dir, cfg
}

func writeSchema(t *testing.T, dir, schema string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(schema), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaRegisterCheckListDiff(t *testing.T) {
	t.Parallel()
	fake := srfake.New()
	defer fake.Close()
	env := map[string]string{"ECST_SCHEMA_REGISTRY_URL": fake.URL()}
	dir, cfg := schemaProject(t, schemaV1)

	r := run(t, env, "--config", cfg, "schema", "list")
	if r.code != 0 || !strings.Contains(r.out, "not registered") {
		t.Fatalf("list before: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "register")
	if r.code != 0 || !strings.Contains(r.out, "customers.state-value\tversion 1\tid 1\tFULL_TRANSITIVE\tregistered") {
		t.Fatalf("register: %d\n%q%s", r.code, r.out, r.err)
	}
	if c, _ := fake.GetSchema("customers.state-value", 1); !strings.Contains(c.Schema.Schema, "Customer") {
		t.Fatal("schema not in the registry")
	}
	r = run(t, env, "--config", cfg, "schema", "register", "customer")
	if r.code != 0 || !strings.Contains(r.out, "version 1\tid 1\tFULL_TRANSITIVE\tunchanged") {
		t.Fatalf("register again: %d\n%s%s", r.code, r.out, r.err)
	}

	// A breaking change is refused before the registry sees it (srfake
	// would accept anything).
	writeSchema(t, dir, schemaBroken)
	r = run(t, env, "--config", cfg, "schema", "check")
	if r.code != cli.ExitProblem || !strings.Contains(r.out, "field `tier` added without a default breaks BACKWARD: readers of the new schema cannot read v1 records") {
		t.Fatalf("check broken: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "register")
	if r.code != cli.ExitProblem || !strings.Contains(r.out, "refused") || !strings.Contains(r.out, `"default": null`) {
		t.Fatalf("register broken: %d\n%s%s", r.code, r.out, r.err)
	}
	if _, ok := fake.GetSchema("customers.state-value", 2); ok {
		t.Fatal("a refused schema reached the registry")
	}
	r = run(t, env, "--config", cfg, "schema", "check", "--format", "json")
	var rep struct {
		Entities []struct {
			Compatible bool `json:"compatible"`
			Problems   []struct{ Kind, Direction, Fix string }
		} `json:"entities"`
	}
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil || r.code != cli.ExitProblem {
		t.Fatalf("json: %d %v\n%s", r.code, err, r.out)
	}
	if rep.Entities[0].Compatible || rep.Entities[0].Problems[0].Kind != "field-added-without-default" || rep.Entities[0].Problems[0].Direction != "BACKWARD" {
		t.Fatalf("json report: %+v", rep)
	}
	r = run(t, env, "--config", cfg, "schema", "check", "--format", "github-actions")
	if r.code != cli.ExitProblem || !strings.HasPrefix(r.out, "::error file=") || !strings.Contains(r.out, "customer.avsc,title=customers.state-value breaks BACKWARD::") {
		t.Fatalf("github-actions: %d\n%s", r.code, r.out)
	}
	r = run(t, env, "--config", cfg, "schema", "diff", "customer")
	if r.code != 0 || !strings.Contains(r.out, "+ Customer.tier: string") {
		t.Fatalf("diff: %d\n%s%s", r.code, r.out, r.err)
	}

	// The compatible change registers as version 2.
	writeSchema(t, dir, schemaV2)
	r = run(t, env, "--config", cfg, "schema", "check")
	if r.code != 0 || !strings.Contains(r.out, "compatible with v1") {
		t.Fatalf("check v2: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "register")
	if r.code != 0 || !strings.Contains(r.out, "version 2") {
		t.Fatalf("register v2: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "list")
	if r.code != 0 || !strings.Contains(r.out, "FULL_TRANSITIVE") || !strings.Contains(r.out, "is v2") {
		t.Fatalf("list: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "diff", "customer")
	if r.code != 0 || !strings.Contains(r.out, "same fields as v2") {
		t.Fatalf("diff same: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "check", "invoice")
	if r.code != cli.ExitError || !strings.Contains(r.err, "declared entities are customer") {
		t.Fatalf("unknown entity: %d\n%s", r.code, r.err)
	}
}

func TestSchemaCheckAgainstGit(t *testing.T) {
	t.Parallel()
	dir, cfg := schemaProject(t, schemaV1)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "v1")
	env := map[string]string{} // no registry at all

	writeSchema(t, dir, schemaBroken)
	r := run(t, env, "--config", cfg, "schema", "check", "--against", "git:main")
	if r.code != cli.ExitProblem || !strings.Contains(r.out, "readers of the new schema cannot read git:main records") {
		t.Fatalf("broken vs git: %d\n%s%s", r.code, r.out, r.err)
	}
	writeSchema(t, dir, schemaV2)
	r = run(t, env, "--config", cfg, "schema", "check", "--against", "git:HEAD")
	if r.code != 0 || !strings.Contains(r.out, "compatible with git:HEAD") {
		t.Fatalf("v2 vs git: %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "check", "--against", "git:no-such-branch")
	if r.code != cli.ExitError || !strings.Contains(r.err, "no such commit") {
		t.Fatalf("bad ref: %d\n%s", r.code, r.err)
	}
	r = run(t, env, "--config", cfg, "schema", "check", "--against", "svn:1")
	if r.code != cli.ExitError {
		t.Fatalf("bad --against: %d", r.code)
	}
}

func TestSchemaRegistryFaults(t *testing.T) {
	t.Parallel()
	fake := srfake.New(srfake.WithAuth("Basic ZWNzdDpyaWdodA==")) // ecst:right
	defer fake.Close()
	_, cfg := schemaProject(t, schemaV1)
	for name, env := range map[string]map[string]string{
		"wrong password": {"ECST_SCHEMA_REGISTRY_URL": fake.URL(), "ECST_SCHEMA_REGISTRY_USERNAME": "ecst", "ECST_SCHEMA_REGISTRY_PASSWORD": "hunter2"},
		"unreachable":    {"ECST_SCHEMA_REGISTRY_URL": "http://ecst:hunter2@127.0.0.1:1"},
		"no url":         {},
	} {
		r := run(t, env, "--config", cfg, "schema", "register")
		if r.code != cli.ExitError || strings.Contains(r.out+r.err, "hunter2") {
			t.Errorf("%s: code %d\n%s%s", name, r.code, r.out, r.err)
		}
		t.Logf("%s: %s", name, strings.TrimSpace(r.err))
	}
	r := run(t, map[string]string{"ECST_SCHEMA_REGISTRY_URL": fake.URL(), "ECST_SCHEMA_REGISTRY_USERNAME": "ecst", "ECST_SCHEMA_REGISTRY_PASSWORD": "hunter2"}, "--config", cfg, "schema", "register")
	if !strings.Contains(r.err, "ECST_SCHEMA_REGISTRY_PASSWORD") {
		t.Errorf("401 does not name the settings to fix: %s", r.err)
	}
}
