package config

import (
	"reflect"
	"testing"
)

// TestTokenize pins how the select-list check splits SQL: words with their
// dots, stars, dollars and a quoted last part; quoted strings and names
// whole (an unterminated one to the end); a cast kept with what it casts;
// and each token's parenthesis depth.
func TestTokenize(t *testing.T) {
	got := tokenize(`SELECT  c.id::text, t."Name", 'it''s', "a b" x, count(*), f(g($1, 2)) AS n, c.* FROM t WHERE s = 'open`)
	want := []token{
		{"SELECT", 0}, {"c.id::text", 0}, {",", 0}, {`t."Name"`, 0}, {",", 0}, {"'it'", 0}, {"'s'", 0}, {",", 0},
		{`"a b"`, 0}, {"x", 0}, {",", 0}, {"count", 0}, {"(", 0}, {"*", 1}, {")", 0}, {",", 0},
		{"f", 0}, {"(", 0}, {"g", 1}, {"(", 1}, {"$", 2}, {"1", 2}, {",", 2}, {"2", 2}, {")", 1}, {")", 0},
		{"AS", 0}, {"n", 0}, {",", 0}, {"c.*", 0}, {"FROM", 0}, {"t", 0}, {"WHERE", 0}, {"s", 0}, {"=", 0}, {"'open", 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tokenize:\n got %v\nwant %v", got, want)
	}
	if got := tokenize(`::int x::`); !reflect.DeepEqual(got, []token{{"x::", 0}}) {
		t.Errorf("a cast with nothing before it: %v", got)
	}
}
