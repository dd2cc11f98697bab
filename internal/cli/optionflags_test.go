package cli

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/verify"
)

// TestOptionFlagsTable: every field the table names is a field of its
// Options, and its flag is a flag of the command that sets it; every
// exported field that has a flag is in the table.
func TestOptionFlagsTable(t *testing.T) {
	root, _ := newRoot(IO{})
	for _, c := range []struct {
		pkg  string
		typ  reflect.Type
		args []string
	}{
		{"republish", reflect.TypeFor[republish.Options](), []string{"republish"}},
		{"verify", reflect.TypeFor[verify.Options](), []string{"verify"}},
	} {
		cmd, _, err := root.Find(c.args)
		if err != nil {
			t.Fatal(err)
		}
		for key, flag := range optionFlags {
			field, ok := strings.CutPrefix(key, c.pkg+".Options.")
			if !ok {
				continue
			}
			if _, ok := c.typ.FieldByName(field); !ok {
				t.Errorf("%s: %s.Options has no field %s", key, c.pkg, field)
			}
			if cmd.Flags().Lookup(strings.TrimPrefix(flag, "--")) == nil {
				t.Errorf("%s: ecst %s has no flag %s", key, c.pkg, flag)
			}
		}
		for f := range c.typ.Fields() {
			if !f.IsExported() {
				continue
			}
			flag := "--" + kebab(f.Name)
			if f.Name == "Keys" {
				flag = "--key"
			}
			if cmd.Flags().Lookup(strings.TrimPrefix(flag, "--")) != nil && optionFlags[c.pkg+".Options."+f.Name] != flag {
				t.Errorf("%s.Options.%s sets %s, and the table says %q", c.pkg, f.Name, flag, optionFlags[c.pkg+".Options."+f.Name])
			}
		}
	}
}

func kebab(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestInFlags: what the CLI prints of the errors of republish and verify
// is told in flags and commands.
func TestInFlags(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"bad selection: republish.Options.All, republish.Options.Keys and republish.Options.Where exclude each other",
			"bad selection: --all, --key and --where exclude each other"},
		{`republish.Options.Where "x = 1" does not run against the source query: ERROR`,
			`--where "x = 1" does not run against the source query: ERROR`},
		{"republish run 7 of customer: boom (resume it with republish.Options{Resume: 7})",
			"republish run 7 of customer: boom (resume it with `ecst republish customer --resume 7`)"},
		{"start `ecst relay`, then run verify.Options{Repair: true} again. Nothing was written",
			"start `ecst relay`, then run `ecst verify customer --repair` again. Nothing was written"},
		{`then run verify.Options{Mirror: "billing customers", Repair: true} again`,
			"then run `ecst verify customer --mirror 'billing customers' --repair` again"},
		{`check with verify.Options{Mirror: "true}, {"}`, "check with `ecst verify customer --mirror 'true}, {'`"},
		{"check with verify.Options{}", "check with `ecst verify customer`"},
		{"republish the drifted keys: a republish of this entity is already running (run 3): wait for it, or stop it and resume it with republish.Options{Resume: 3}",
			"republish the drifted keys: a republish of this entity is already running (run 3): wait for it, or stop it and resume it with `ecst republish customer --resume 3`"},
		{"verify.Options.Mirror m: ERROR: relation \"m\" does not exist", "--mirror m: ERROR: relation \"m\" does not exist"},
		// What it cannot read stays as it is.
		{"verify.Options.Nope and verify.Options{Nope: 1} and republish.Options", "verify.Options.Nope and verify.Options{Nope: 1} and republish.Options"},
		{"verify.Options{Mirror: \"open", "verify.Options{Mirror: \"open"},
		{"nothing to translate", "nothing to translate"},
	} {
		if got := translateOptions(c.in, "customer"); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	base := errors.New("republish run 7 of customer: boom (resume it with republish.Options{Resume: 7})")
	err := inFlags(base, "customer")
	if !errors.Is(err, base) || !strings.Contains(err.Error(), "--resume 7") {
		t.Errorf("inFlags: %v does not wrap %v", err, base)
	}
}
