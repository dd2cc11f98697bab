package schemas_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/ecst-io/ecst/schemas"
)

// rec builds a record schema named Customer with the given field JSON.
func rec(fields ...string) string {
	return recNamed("Customer", "ecst.test", fields...)
}

func recNamed(name, ns string, fields ...string) string {
	return fmt.Sprintf(`{"type":"record","name":%q,"namespace":%q,"fields":[%s]}`, name, ns, strings.Join(fields, ","))
}

const (
	id       = `{"name":"id","type":"string"}`
	tierEnum = `{"type":"enum","name":"Tier","symbols":["FREE","GOLD"]}`
)

func field(name, typ string) string { return fmt.Sprintf(`{"name":%q,"type":%s}`, name, typ) }
func fieldDefault(name, typ, def string) string {
	return fmt.Sprintf(`{"name":%q,"type":%s,"default":%s}`, name, typ, def)
}

// change is one schema evolution with its verdicts from the Avro
// specification's resolution rules: backward (the new schema reads old
// data) and forward (the old schema reads new data).
type change struct {
	name          string
	old, new      string
	backward, fwd bool
	kind          string // the problem kind expected first when incompatible
}

var changes = []change{
	{"field added with default", rec(id), rec(id, fieldDefault("tier", `["null","string"]`, "null")), true, true, ""},
	{"field added without default", rec(id), rec(id, field("tier", `"string"`)), false, true, "field-added-without-default"},
	{"field removed with default", rec(id, fieldDefault("tier", `"string"`, `"free"`)), rec(id), true, true, ""},
	{"field removed without default", rec(id, field("tier", `"string"`)), rec(id), true, false, "field-removed-without-default"},
	{"field renamed without alias", rec(id, field("name", `"string"`)), rec(id, field("full_name", `"string"`)), false, false, ""},
	{"field renamed with alias", rec(id, field("name", `"string"`)), rec(id, `{"name":"full_name","type":"string","aliases":["name"]}`), true, false, "field-removed-without-default"},
	{"field renamed with alias and default", rec(id, fieldDefault("name", `"string"`, `""`)), rec(id, `{"name":"full_name","type":"string","aliases":["name"],"default":""}`), true, true, ""},
	{"int to long", rec(field("n", `"int"`)), rec(field("n", `"long"`)), true, false, "type-promotes-one-way"},
	{"long to float", rec(field("n", `"long"`)), rec(field("n", `"float"`)), true, false, "type-promotes-one-way"},
	{"float to double", rec(field("n", `"float"`)), rec(field("n", `"double"`)), true, false, "type-promotes-one-way"},
	{"int to double", rec(field("n", `"int"`)), rec(field("n", `"double"`)), true, false, "type-promotes-one-way"},
	{"string to bytes", rec(field("s", `"string"`)), rec(field("s", `"bytes"`)), true, true, ""},
	{"bytes to string", rec(field("s", `"bytes"`)), rec(field("s", `"string"`)), true, true, ""},
	{"long to int (narrowing)", rec(field("n", `"long"`)), rec(field("n", `"int"`)), false, true, "type-promotes-one-way"},
	{"double to float (narrowing)", rec(field("n", `"double"`)), rec(field("n", `"float"`)), false, true, "type-promotes-one-way"},
	{"string to int", rec(field("n", `"string"`)), rec(field("n", `"int"`)), false, false, "type-changed"},
	{"enum symbol added, no enum default", rec(field("tier", tierEnum)), rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE","GOLD","PLATINUM"]}`)), true, false, "enum-symbol-added"},
	{"enum symbol added, with enum default", rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE","GOLD"],"default":"FREE"}`)), rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE","GOLD","PLATINUM"],"default":"FREE"}`)), true, true, ""},
	{"enum symbol removed, no enum default", rec(field("tier", tierEnum)), rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE"]}`)), false, true, "enum-symbol-removed"},
	{"enum symbol removed, with enum default", rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE","GOLD"],"default":"FREE"}`)), rec(field("tier", `{"type":"enum","name":"Tier","symbols":["FREE"],"default":"FREE"}`)), true, true, ""},
	{"union branch added", rec(field("v", `["null","string"]`)), rec(field("v", `["null","string","int"]`)), true, false, "union-branch-added"},
	{"union branch removed", rec(field("v", `["null","string","int"]`)), rec(field("v", `["null","string"]`)), false, true, "union-branch-removed"},
	{"nullable to required", rec(field("v", `["null","string"]`)), rec(field("v", `"string"`)), false, true, "union-branch-removed"},
	{"required to nullable", rec(field("v", `"string"`)), rec(field("v", `["null","string"]`)), true, false, "union-branch-added"},
	{"nested record field added without default", rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`)))), rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`), field("zip", `"string"`)))), false, true, "field-added-without-default"},
	{"nested record field added with default", rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`)))), rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`), fieldDefault("zip", `"string"`, `""`)))), true, true, ""},
	{"nested record field removed without default", rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`), field("zip", `"string"`)))), rec(field("addr", recNamed("Address", "ecst.test", field("city", `"string"`)))), true, false, "field-removed-without-default"},
	{"logical type timestamp-millis to timestamp-micros", rec(field("t", `{"type":"long","logicalType":"timestamp-millis"}`)), rec(field("t", `{"type":"long","logicalType":"timestamp-micros"}`)), true, true, ""},
	{"logical type date to timestamp-millis (int to long)", rec(field("t", `{"type":"int","logicalType":"date"}`)), rec(field("t", `{"type":"long","logicalType":"timestamp-millis"}`)), true, false, "type-promotes-one-way"},
	{"logical type added to a long", rec(field("t", `"long"`)), rec(field("t", `{"type":"long","logicalType":"timestamp-micros"}`)), true, true, ""},
	{"namespace changed", recNamed("Customer", "ecst.a", id), recNamed("Customer", "ecst.b", id), true, true, ""},
	{"record renamed without alias", recNamed("Customer", "ecst.test", id), recNamed("Client", "ecst.test", id), false, false, "name-changed"},
	{"record renamed with alias", recNamed("Customer", "ecst.test", id), `{"type":"record","name":"Client","namespace":"ecst.test","aliases":["ecst.test.Customer"],"fields":[` + id + `]}`, true, false, "name-changed"},
	{"array items int to long", rec(field("xs", `{"type":"array","items":"int"}`)), rec(field("xs", `{"type":"array","items":"long"}`)), true, false, "type-promotes-one-way"},
	{"map values string to int", rec(field("m", `{"type":"map","values":"string"}`)), rec(field("m", `{"type":"map","values":"int"}`)), false, false, "type-changed"},
	{"fixed size changed", rec(field("f", `{"type":"fixed","name":"Hash","size":16}`)), rec(field("f", `{"type":"fixed","name":"Hash","size":32}`)), false, false, "fixed-size-changed"},
	{"doc changed only", rec(id), `{"type":"record","name":"Customer","namespace":"ecst.test","doc":"now documented","fields":[{"name":"id","type":"string","doc":"the id"}]}`, true, true, ""},
}

func mustParse(t *testing.T, s string) avro.Schema {
	t.Helper()
	p, err := schemas.Parse(s)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return p
}

// expected derives each level's verdict for a two-version history.
func expected(c change, level string) bool {
	switch level {
	case schemas.None:
		return true
	case schemas.Backward, schemas.BackwardTransitive:
		return c.backward
	case schemas.Forward, schemas.ForwardTransitive:
		return c.fwd
	}
	return c.backward && c.fwd
}

func TestCompatibilityMatrix(t *testing.T) {
	t.Parallel()
	if len(changes) < 25 {
		t.Fatalf("only %d changes", len(changes))
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			old, next := mustParse(t, c.old), mustParse(t, c.new)
			for _, level := range schemas.Levels {
				problems, err := schemas.Check(level, next, []schemas.Version{{Version: 1, Label: "v1", Schema: old}})
				if err != nil {
					t.Fatal(err)
				}
				if got, want := len(problems) == 0, expected(c, level); got != want {
					t.Errorf("%s: compatible = %v, want %v; problems: %v", level, got, want, problems)
				}
				for _, p := range problems {
					if p.Message == "" || p.Fix == "" || p.Path == "" {
						t.Errorf("%s: problem lacks a message, fix or path: %+v", level, p)
					}
				}
				if len(problems) > 0 && c.kind != "" && level != schemas.None && problems[0].Kind != c.kind {
					t.Errorf("%s: first problem kind %q, want %q (%s)", level, problems[0].Kind, c.kind, problems[0].Message)
				}
			}
		})
	}
}

// TestTransitiveLevels: three versions where the change passes against
// the latest version and fails against the first.
func TestTransitiveLevels(t *testing.T) {
	t.Parallel()
	cases := []struct {
		level, transitive string
		v1, v2, v3        string
	}{
		// v2 drops b; v3 brings it back with another type.
		{schemas.Backward, schemas.BackwardTransitive,
			rec(field("a", `"int"`), field("b", `"string"`)),
			rec(field("a", `"int"`)),
			rec(field("a", `"int"`), fieldDefault("b", `"int"`, "0"))},
		// v2 gives b a default; v3 removes it, which v1's readers cannot take.
		{schemas.Forward, schemas.ForwardTransitive,
			rec(field("a", `"int"`), field("b", `"string"`)),
			rec(field("a", `"int"`), fieldDefault("b", `"string"`, `""`)),
			rec(field("a", `"int"`))},
		{schemas.Full, schemas.FullTransitive,
			rec(field("a", `"int"`), field("b", `"string"`)),
			rec(field("a", `"int"`), fieldDefault("b", `"string"`, `""`)),
			rec(field("a", `"int"`))},
	}
	for _, c := range cases {
		history := []schemas.Version{{Version: 1, Label: "v1", Schema: mustParse(t, c.v1)}, {Version: 2, Label: "v2", Schema: mustParse(t, c.v2)}}
		next := mustParse(t, c.v3)
		if p, _ := schemas.Check(c.level, next, history); len(p) != 0 {
			t.Errorf("%s against the latest: %v", c.level, p)
		}
		p, _ := schemas.Check(c.transitive, next, history)
		if len(p) == 0 {
			t.Errorf("%s passed; v3 breaks v1", c.transitive)
			continue
		}
		for _, x := range p {
			if x.Against != "v1" {
				t.Errorf("%s: problem against %s, want only v1: %s", c.transitive, x.Against, x.Message)
			}
		}
		t.Logf("%s: %s; %s", c.transitive, p[0].Message, p[0].Fix)
	}
}

func TestProblemMessages(t *testing.T) {
	t.Parallel()
	p, _ := schemas.Check(schemas.Backward, mustParse(t, rec(id, field("tier", `"string"`))),
		[]schemas.Version{{Version: 3, Label: "v3", Schema: mustParse(t, rec(id))}})
	if len(p) != 1 {
		t.Fatalf("problems = %v", p)
	}
	want := "field `tier` added without a default breaks BACKWARD: readers of the new schema cannot read v3 records"
	if p[0].Message != want || !strings.Contains(p[0].Fix, `"default": null`) || p[0].Path != "Customer.tier" {
		t.Fatalf("got %+v", p[0])
	}
	if _, err := schemas.Check("SIDEWAYS", nil, nil); err == nil {
		t.Fatal("unknown level accepted")
	}
}

// TestProblemWording pins the words of messages and fixes where they once
// went wrong: a fix for the direction that does not break, a top-level type
// called a field, and a suggested type that was not schema JSON.
func TestProblemWording(t *testing.T) {
	t.Parallel()
	enum := func(symbols string) string { return `{"type":"enum","name":"Enum1","symbols":[` + symbols + `]}` }
	for _, c := range []struct {
		name, level, old, new string
		message, fix          []string // substrings that must appear
		not                   []string // substrings that must not
	}{
		{
			name: "narrowing breaks BACKWARD, and the fix says so", level: schemas.Full,
			old: rec(field("n", `"long"`)), new: rec(field("n", `"int"`)),
			message: []string{"field `n` changed from long to int", "breaks BACKWARD"},
			fix:     []string{"keep long", "BACKWARD or FULL", "never narrow", "add a new field"},
			not:     []string{"FORWARD"},
		},
		{
			name: "widening breaks FORWARD, and the fix says so", level: schemas.Full,
			old: rec(field("n", `"int"`)), new: rec(field("n", `"long"`)),
			message: []string{"field `n` changed from int to long", "breaks FORWARD"},
			fix:     []string{"keep int", "FORWARD or FULL", "never widen"},
			not:     []string{"BACKWARD"},
		},
		{
			name: "a top-level primitive is the schema, not a field", level: schemas.Backward,
			old: `"string"`, new: `"int"`,
			message: []string{"the schema changed from string to int"},
			fix:     []string{"keep the type"},
			not:     []string{"(root)", "field", "add a new field"},
		},
		{
			name: "a top-level narrowing has no field to add", level: schemas.Backward,
			old: `"long"`, new: `"int"`,
			message: []string{"the schema changed from long to int"},
			fix:     []string{"keep long", "BACKWARD or FULL"},
			not:     []string{"(root)", "field"},
		},
		{
			name: "a top-level enum is the schema", level: schemas.Backward,
			old: enum(`"A","B"`), new: enum(`"A"`),
			message: []string{"the schema (enum Enum1) no longer has symbol B"},
			not:     []string{"`Enum1`"},
		},
		{
			name: "a symbol added to a top-level enum", level: schemas.Forward,
			old: enum(`"A"`), new: enum(`"A","B"`),
			message: []string{"symbol B added to the schema (enum Enum1)"},
			not:     []string{"`Enum1`"},
		},
		{
			name: "a top-level array's items", level: schemas.Backward,
			old: `{"type":"array","items":"string"}`, new: `{"type":"array","items":"int"}`,
			message: []string{"the items of the schema changed from string to int"},
			not:     []string{"(root)", "field"},
		},
		{
			name: "a field's array items", level: schemas.Backward,
			old: rec(field("xs", `{"type":"array","items":"string"}`)), new: rec(field("xs", `{"type":"array","items":"int"}`)),
			message: []string{"the items of field `xs` changed from string to int"},
		},
		{
			name: "a top-level record renamed", level: schemas.Backward,
			old: recNamed("Customer", "ecst.test", id), new: recNamed("Client", "ecst.test", id),
			message: []string{"the schema renamed from record Customer to record Client"},
		},
		{
			name: "a field's record renamed", level: schemas.Backward,
			old: rec(field("a", recNamed("Addr", "ecst.test", id))), new: rec(field("a", recNamed("Address", "ecst.test", id))),
			message: []string{"the type of field `a` renamed from record Addr to record Address"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := schemas.Check(c.level, mustParse(t, c.new), []schemas.Version{{Version: 1, Label: "v1", Schema: mustParse(t, c.old)}})
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != 1 {
				t.Fatalf("want one problem, got %v", p)
			}
			for _, w := range c.message {
				if !strings.Contains(p[0].Message, w) {
					t.Errorf("message %q lacks %q", p[0].Message, w)
				}
			}
			for _, w := range c.fix {
				if !strings.Contains(p[0].Fix, w) {
					t.Errorf("fix %q lacks %q", p[0].Fix, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(p[0].Message+" "+p[0].Fix, w) {
					t.Errorf("%q; %q: has %q", p[0].Message, p[0].Fix, w)
				}
			}
		})
	}
}

// TestMissingFieldFixApplies applies the fix suggested for a field added
// without a default, as written, and checks the result parses and is
// compatible: the suggested type is schema JSON for every kind of type.
func TestMissingFieldFixApplies(t *testing.T) {
	t.Parallel()
	const tierRef = `"ecst.test.Tier"`
	for _, c := range []struct{ name, old, new string }{
		{"primitive", rec(id), rec(id, field("f", `"string"`))},
		{"logical type", rec(id), rec(id, field("f", `{"type":"long","logicalType":"timestamp-micros"}`))},
		{"enum defined in the field", rec(id), rec(id, field("f", tierEnum))},
		{"enum defined earlier", rec(id, field("a", tierEnum)), rec(id, field("a", tierEnum), field("f", tierRef))},
		{"record defined in the field", rec(id), rec(id, field("f", recNamed("Address", "ecst.test", field("city", `"string"`), fieldDefault("zip", `"string"`, `""`))))},
		{"array of an enum", rec(id), rec(id, field("f", `{"type":"array","items":`+tierEnum+`}`))},
		{"union without null", rec(id), rec(id, field("f", `["string","int"]`))},
		{"nullable union without a default", rec(id), rec(id, field("f", `["string","null"]`))},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			old := mustParse(t, c.old)
			p, err := schemas.Check(schemas.Backward, mustParse(t, c.new), []schemas.Version{{Version: 1, Label: "v1", Schema: old}})
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != 1 || p[0].Kind != "field-added-without-default" {
				t.Fatalf("want one field-added-without-default, got %v", p)
			}
			_, suggested, ok := strings.Cut(p[0].Fix, "make it nullable, ")
			if !ok {
				t.Fatalf("fix %q suggests no type", p[0].Fix)
			}
			fixed := strings.Replace(c.new, field("f", fieldType(t, c.new)), `{"name":"f",`+suggested+`}`, 1)
			next, err := schemas.Parse(fixed)
			if err != nil {
				t.Fatalf("the fix %q does not parse: %v\n%s", suggested, err, fixed)
			}
			if p, _ := schemas.Check(schemas.Full, next, []schemas.Version{{Version: 1, Label: "v1", Schema: old}}); len(p) != 0 {
				t.Fatalf("after the fix %q: %v", suggested, p)
			}
		})
	}
}

// fieldType returns the JSON type of field f in a schema built by rec.
func fieldType(t *testing.T, schema string) string {
	t.Helper()
	_, after, ok := strings.Cut(schema, `{"name":"f","type":`)
	if !ok {
		t.Fatalf("no field f in %s", schema)
	}
	return after[:strings.LastIndex(after, "}]}")]
}

// TestAgreesWithHamba compares each direction's verdict with hamba/avro's
// own checker, and pins the cases where they differ, with the reason ours
// follows the specification.
func TestAgreesWithHamba(t *testing.T) {
	t.Parallel()
	knownDiff := map[string]string{}
	for _, c := range changes {
		old, next := mustParse(t, c.old), mustParse(t, c.new)
		for _, dir := range []struct {
			name         string
			reader, writ avro.Schema
			ours         bool
		}{{"backward", next, old, c.backward}, {"forward", old, next, c.fwd}} {
			hamba := avro.NewSchemaCompatibility().Compatible(dir.reader, dir.writ) == nil
			if hamba != dir.ours {
				key := c.name + "/" + dir.name
				if _, ok := knownDiff[key]; !ok {
					t.Errorf("%s: hamba says %v, the specification %v", key, hamba, dir.ours)
				}
			}
		}
	}
}

// FuzzCheck feeds arbitrary schema text through the parser and the
// checker: no panics, and every schema is compatible with itself at every
// level.
func FuzzCheck(f *testing.F) {
	for _, c := range changes {
		f.Add(c.old, c.new)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		sa, err := schemas.Parse(a)
		if err != nil {
			return
		}
		for _, level := range schemas.Levels {
			p, err := schemas.Check(level, sa, []schemas.Version{{Label: "v1", Schema: sa}})
			if err != nil || len(p) > 0 {
				t.Fatalf("%s: a schema is incompatible with itself: %v %v\n%s", level, err, p, a)
			}
		}
		sb, err := schemas.Parse(b)
		if err != nil {
			return
		}
		for _, level := range schemas.Levels {
			if _, err := schemas.Check(level, sb, []schemas.Version{{Label: "v1", Schema: sa}}); err != nil {
				t.Fatal(err)
			}
		}
		_ = schemas.Diff(sa, sb)
	})
}
