package pgident_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestParse(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, schema, table, quoted, canonical string
	}{
		{"book_mirror", "", "book_mirror", `"book_mirror"`, "book_mirror"},
		{"BookMirror", "", "bookmirror", `"bookmirror"`, "bookmirror"},
		{`"BookMirror"`, "", "BookMirror", `"BookMirror"`, `"BookMirror"`},
		{`"Bad Name"`, "", "Bad Name", `"Bad Name"`, `"Bad Name"`},
		{"analytics.BookMirror", "analytics", "bookmirror", `"analytics"."bookmirror"`, "analytics.bookmirror"},
		{`"My Schema"."Book Mirror"`, "My Schema", "Book Mirror", `"My Schema"."Book Mirror"`, `"My Schema"."Book Mirror"`},
		{` analytics . "a.b" `, "analytics", "a.b", `"analytics"."a.b"`, `analytics."a.b"`},
		{`"say ""hi"""`, "", `say "hi"`, `"say ""hi"""`, `"say ""hi"""`},
		{"t$1", "", "t$1", `"t$1"`, "t$1"},
		{"café", "", "café", `"café"`, "café"},
		{"user", "", "user", `"user"`, "user"},
	} {
		n, err := pgident.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if n.Schema != c.schema || n.Table != c.table || n.Quoted() != c.quoted || n.String() != c.canonical {
			t.Errorf("Parse(%q) = %+v, quoted %s, canonical %s; want %q.%q, %s, %s", c.in, n, n.Quoted(), n, c.schema, c.table, c.quoted, c.canonical)
		}
		if again, err := pgident.Parse(n.String()); err != nil || again != n {
			t.Errorf("the canonical %s reads back as %+v, %v", n, again, err)
		}
		if again, err := pgident.Parse(n.Quoted()); err != nil || again != n {
			t.Errorf("the quoted %s reads back as %+v, %v", n.Quoted(), again, err)
		}
	}
}

func TestParseErrorsSayHowToQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Bad Name":              `double-quote it as in SQL: '"Bad Name"'`,
		"My Schema.Book Mirror": `'"My Schema"."Book Mirror"'`,
		"bad-name":              `'"bad-name"'`,
		"1st":                   `'"1st"'`,
		`"open`:                 "not closed",
		`""`:                    "empty name",
		"":                      "empty",
		"a.b.c":                 "3 dot-separated parts",
		"a.":                    "double-quote",
		strings.Repeat("x", 64): "63-byte limit",
	} {
		_, err := pgident.Parse(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", in, err, want)
		}
	}
	n, _ := pgident.Parse(strings.Repeat("x", 55))
	if _, err := n.WithSuffix("_ecst_rebuild"); err == nil || !strings.Contains(err.Error(), "63-byte limit") {
		t.Errorf("a 68-byte shadow name: %v", err)
	}
	if s, err := (pgident.Name{Schema: "a", Table: "Book Mirror"}).WithSuffix("_x"); err != nil || s.String() != `a."Book Mirror_x"` {
		t.Errorf("WithSuffix = %s, %v", s, err)
	}
}

// TestParseAgreesWithPostgres: PostgreSQL's own parse_ident reads every
// name, good or bad, as Parse does.
func TestParseAgreesWithPostgres(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewDB(t, pgtest.Empty())
	for _, in := range []string{
		"book_mirror", "BookMirror", `"BookMirror"`, `"Bad Name"`, "analytics.BookMirror", `"My Schema"."Book Mirror"`,
		` analytics . "a.b" `, `"say ""hi"""`, "t$1", "café", "ÉTÉ", "user", "_x9",
		"Bad Name", "bad-name", "1st", "$x", `"open`, `""`, "a.", ".a", "a..b", `"a"b`, "a b.c",
	} {
		var got []string
		pgErr := pool.QueryRow(context.Background(), "SELECT parse_ident($1)", in).Scan(&got)
		n, err := pgident.Parse(in)
		switch {
		case pgErr != nil && err != nil:
		case pgErr != nil:
			t.Errorf("Parse(%q) = %+v, PostgreSQL refuses it: %v", in, n, pgErr)
		case err != nil:
			t.Errorf("Parse(%q): %v; PostgreSQL reads %q", in, err, got)
		default:
			want := []string{n.Table}
			if n.Schema != "" {
				want = []string{n.Schema, n.Table}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Parse(%q) = %q, PostgreSQL reads %q", in, want, got)
			}
		}
	}
}
