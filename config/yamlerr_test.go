package config_test

import (
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
)

// TestYAMLErrorsShowTheLineAtFault: mis-indented files, as people write
// them, are reported at the line at fault (go.yaml names the line where
// the enclosing block began), shown marked among its neighbours.
func TestYAMLErrorsShowTheLineAtFault(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		yml  string
		want []string
	}{
		{"a source key one space short", customerHead + "     key: id\n      version: version\n", []string{"invalid YAML at line 8: did not find expected key", "check its indentation",
			"   7 |       table: customers\n>  8 |      key: id\n   9 |       version: version"}},
		{"a second entity one space short", `entities:
  customer:
    topic: customers.state
    schema: schemas/customer.avsc
 account:
    topic: accounts.state
`, []string{"invalid YAML at line 5:", ">  5 |  account:"}},
		{"a key indented under a value", `service: s
entities:
  customer:
    topic: customers.state
      schema: schemas/customer.avsc
`, []string{"invalid YAML at line 5: mapping values are not allowed in this context", ">  5 |       schema: schemas/customer.avsc"}},
		{"a list item out of line", `kafka:
  brokers:
    - a:9092
  - b:9092
service: s
`, []string{"invalid YAML at line 4:", "   3 |     - a:9092\n>  4 |   - b:9092\n   5 | service: s"}},
		{"a tab", "service: s\nentities:\n  customer:\n\ttopic: customers.state\n",
			[]string{"invalid YAML at line 4:", "YAML indents with spaces, and this line has a tab", ">  4 | \ttopic: customers.state"}},
		{"a source key at the entity's level", customerHead + "    key: id\n", []string{`line 8: unknown key "key"`, `"key" is a key of source: check its indentation`, ">  8 |     key: id"}},
		{"an entity key at the top level", `service: s
entities:
  customer:
    topic: customers.state
schema: schemas/customer.avsc
`, []string{`line 5: unknown key "schema"`, `"schema" is a key of an entity`, "   4 |     topic: customers.state\n>  5 | schema: schemas/customer.avsc"}},
		{"a misspelt key", "service: s\nentites: {}\n", []string{`line 2: unknown key "entites"`, "check the spelling", ">  2 | entites: {}"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(write(t, c.yml), nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
