package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/internal/cli"
)

// TestEntityArgument: every command that takes an ENTITY says, when it is
// missing, that it is, and which entities the config declares.
func TestEntityArgument(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "ecst.yaml")
	os.WriteFile(cfgPath, []byte("entities:\n  order:\n    topic: orders.state\n  customer:\n    topic: customers.state\n"), 0o644)
	var paths [][]string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if strings.Contains(c.Use, " ENTITY") {
			paths = append(paths, strings.Fields(c.CommandPath())[1:])
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(cli.NewCommand(cli.IO{}))
	if len(paths) < 4 {
		t.Fatalf("commands taking an ENTITY: %v; want verify, republish, mirror and schema diff at least", paths)
	}
	for _, p := range paths {
		usage := "Usage: ecst " + strings.Join(p, " ") + " ENTITY [flags]"
		r := run(t, nil, append([]string{"--config", cfgPath}, p...)...)
		if want := "ecst: ENTITY is missing: name one of the entities declared in " + cfgPath + ": customer, order\n" + usage + "\n"; r.code != cli.ExitError || r.err != want {
			t.Errorf("ecst %v: code %d\n%s\nwant code 2 and\n%s", p, r.code, r.err, want)
		}
		r = run(t, nil, append(append([]string{"--config", cfgPath}, p...), "customer", "order")...)
		if r.code != cli.ExitError || !strings.Contains(r.err, "takes one ENTITY, and was given 2: customer order\n"+usage) {
			t.Errorf("ecst %v customer order: code %d\n%s", p, r.code, r.err)
		}
		r = run(t, nil, append([]string{"--config", filepath.Join(dir, "none.yaml")}, p...)...)
		if r.code != cli.ExitError || !strings.Contains(r.err, "ENTITY is missing: the declared entities cannot be listed: config file "+filepath.Join(dir, "none.yaml")+" does not exist") {
			t.Errorf("ecst %v with no config: code %d\n%s", p, r.code, r.err)
		}
	}
}
