package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/config"
)

// TestSchemaFileErrors: an .avsc that is not JSON is reported as a JSON
// syntax error in that file, with its line and column and that line alone;
// one that is JSON but not Avro says so; neither quotes the whole file.
func TestSchemaFileErrors(t *testing.T) {
	t.Parallel()
	const trailingComma = `{
  "type": "record",
  "name": "Book",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "title", "type": "string"},
  ]
}
`
	long := `{"type": "record", "name": "Book", "fields": [{"name": "id", "type": ["null", {"nested": [` +
		strings.Repeat(`"padding", `, 100) + `"end"]}]}]}`
	cases := []struct {
		name, avsc string
		want       []string
		notWant    []string
	}{
		{"trailing comma", trailingComma,
			[]string{"JSON syntax error in schema file ", "book.avsc at line 7, column 3", "invalid character ']'", "a comma before a closing bracket", "\n7 |   ]\n  |   ^"},
			[]string{`"name": "Book"`, "unknown type"}},
		{"single quotes", "{\n  'type': 'record'\n}\n",
			[]string{"book.avsc at line 2, column 3", "2 |   'type': 'record'"}, nil},
		{"a comment", "{\n\t// books\n\t\"type\": \"record\"\n}\n",
			[]string{"book.avsc at line 2, column 2", "2 | \t// books\n  | \t^"}, nil},
		{"cut short", "{\n  \"type\": \"record\",\n  \"fields\": [\n",
			[]string{"book.avsc at line 3", "unexpected end of JSON input", "a } or ] is missing"}, nil},
		{"empty", "\n", []string{"schema file ", "book.avsc is empty"}, nil},
		{"JSON but not Avro", long,
			[]string{"book.avsc is JSON but not a valid Avro schema: avro: unknown type", "…"},
			[]string{"end"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := write(t, "service: s\nentities:\n  book:\n    topic: books.state\n    schema: schemas/book.avsc\n")
			if err := os.WriteFile(filepath.Join(filepath.Dir(p), "schemas", "book.avsc"), []byte(c.avsc), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Finish()
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "entities.book.schema: ") {
				t.Errorf("error does not name the setting: %s", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("error quotes %q:\n%s", w, msg)
				}
			}
		})
	}
}
