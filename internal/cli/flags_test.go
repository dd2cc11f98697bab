package cli_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/cli"
)

// TestBooleanFlags: every boolean setting that has a flag is a switch
// (--kafka-tls, --kafka-tls=false) that overrides the variable, and a bad
// value is reported under the name the user typed: the flag or the
// variable.
func TestBooleanFlags(t *testing.T) {
	t.Parallel()
	root := cli.NewCommand(cli.IO{})
	n := 0
	for _, o := range config.Overrides {
		if o.Flag == "" {
			continue
		}
		f := root.PersistentFlags().Lookup(o.Flag)
		if f == nil {
			t.Fatalf("--%s is not a flag", o.Flag)
		}
		if want := map[bool]string{true: "bool", false: "string"}[o.Bool]; f.Value.Type() != want {
			t.Errorf("--%s is a %s flag, want %s", o.Flag, f.Value.Type(), want)
		}
		if o.Bool {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no boolean flag to check")
	}

	const cfg = "../../examples/customers/ecst.yaml"
	tlsOn := regexp.MustCompile(`(?m)^kafka:\n(?:  .*\n)*  tls:\n    enabled: true$`)
	r := run(t, nil, "--config", cfg, "config", "show", "--kafka-tls")
	if r.code != 0 || !tlsOn.MatchString(r.out) {
		t.Fatalf("--kafka-tls: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, map[string]string{"ECST_KAFKA_TLS": "true"}, "--config", cfg, "config", "show", "--kafka-tls=false")
	if r.code != 0 || tlsOn.MatchString(r.out) || !strings.Contains(r.out, "enabled: false") {
		t.Fatalf("--kafka-tls=false over ECST_KAFKA_TLS=true: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, map[string]string{"ECST_KAFKA_TLS": "true"}, "--config", cfg, "config", "show")
	if r.code != 0 || !tlsOn.MatchString(r.out) {
		t.Fatalf("ECST_KAFKA_TLS=true: code %d\n%s%s", r.code, r.out, r.err)
	}

	for _, c := range []struct {
		env     map[string]string
		args    []string
		want    []string
		notWant string
	}{
		// The word after a switch is an argument: say so, under the flag.
		{nil, []string{"--config", cfg, "config", "show", "--kafka-tls", "yes"},
			[]string{`--kafka-tls is a switch and takes no value ("yes" was read as an argument): write --kafka-tls, or --kafka-tls=false`}, "ECST_KAFKA_TLS"},
		{nil, []string{"--config", cfg, "config", "show", "--kafka-tls=yes"},
			[]string{`invalid argument "yes" for "--kafka-tls" flag`}, "ECST_KAFKA_TLS"},
		{map[string]string{"ECST_KAFKA_TLS": "yes"}, []string{"--config", cfg, "config", "show"},
			[]string{`ECST_KAFKA_TLS: "yes" is not a boolean; use true or false`}, "--kafka-tls"},
	} {
		r := run(t, c.env, c.args...)
		if r.code != cli.ExitError {
			t.Errorf("%v: code %d, want %d\n%s", c.args, r.code, cli.ExitError, r.err)
		}
		for _, w := range c.want {
			if !strings.Contains(r.err, w) {
				t.Errorf("%v %v: error lacks %q:\n%s", c.env, c.args, w, r.err)
			}
		}
		if strings.Contains(r.err, c.notWant) {
			t.Errorf("%v %v: error names %s, which was not used:\n%s", c.env, c.args, c.notWant, r.err)
		}
	}
}
