// Package pgident reads the PostgreSQL table names ecst takes from its
// users (`ecst mirror --table`, `ecst verify --mirror`, `ecst rebuild`'s
// CONSUMER, an entity's source.table, consumer.Postgres.Table) the way
// PostgreSQL reads a name in SQL, so that a name means the same table to
// ecst as to psql:
//
//   - an unquoted part folds to lower case and holds letters, digits, _
//     and $ (not first): BookMirror is the table bookmirror;
//   - a double-quoted part is kept exactly, spaces, capitals and dots
//     included, with "" for a quote: "Book Mirror";
//   - a dot outside quotes separates the schema from the table:
//     analytics.book_mirror, "My Schema"."Book Mirror".
//
// ecst then writes every name into SQL fully quoted (Quoted), and shows it,
// and builds a mirror's consumer name from it, in one canonical form
// (String).
package pgident

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// MaxLen is the longest name part PostgreSQL keeps, in bytes
// (NAMEDATALEN - 1); it silently truncates longer ones.
const MaxLen = 63

// Name is a table name, optionally schema-qualified.
type Name struct {
	Schema string // empty: unqualified, found on the search_path
	Table  string
}

// Parse reads a table name written as in SQL.
func Parse(s string) (Name, error) {
	parts, err := split(s)
	if err != nil {
		return Name{}, fmt.Errorf("%q is not a table name: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return Name{Table: parts[0]}, nil
	case 2:
		return Name{Schema: parts[0], Table: parts[1]}, nil
	}
	return Name{}, fmt.Errorf("%q is not a table name: it has %d dot-separated parts; write table or schema.table (double-quote a part that holds a dot)", s, len(parts))
}

func split(s string) ([]string, error) {
	var parts []string
	rest := strings.TrimSpace(s)
	if rest == "" {
		return nil, errors.New("it is empty")
	}
	for {
		var part string
		if strings.HasPrefix(rest, `"`) {
			end := closingQuote(rest)
			if end < 0 {
				return nil, errors.New("a double quote is not closed")
			}
			part = strings.ReplaceAll(rest[1:end], `""`, `"`)
			if part == "" {
				return nil, errors.New(`"" is an empty name`)
			}
			rest = rest[end+1:]
		} else {
			n := bareLen(rest)
			if n == 0 {
				return nil, errNeedsQuotes(s)
			}
			part = fold(rest[:n])
			rest = rest[n:]
		}
		if len(part) > MaxLen {
			return nil, fmt.Errorf("%q is longer than PostgreSQL's %d-byte limit for a name", part, MaxLen)
		}
		parts = append(parts, part)
		rest = strings.TrimLeft(rest, " \t\n\r")
		if rest == "" {
			return parts, nil
		}
		if rest[0] != '.' {
			return nil, errNeedsQuotes(s)
		}
		rest = strings.TrimLeft(rest[1:], " \t\n\r")
	}
}

// closingQuote is the index of the quote that closes the quoted part s
// starts with, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			i++
			continue
		}
		return i
	}
	return -1
}

// bareLen is the length of the unquoted identifier s starts with: a
// letter, _ or a non-ASCII byte, then those, digits and $.
func bareLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c >= 0x80:
		case (c >= '0' && c <= '9') || c == '$':
			if i == 0 {
				return 0
			}
		default:
			return i
		}
	}
	return len(s)
}

// fold lowers ASCII letters only, as PostgreSQL does with a UTF-8 database.
func fold(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func errNeedsQuotes(s string) error {
	return fmt.Errorf("an unquoted name holds only letters, digits, _ and $; to keep spaces, capitals or other characters, double-quote it as in SQL: '%s'", suggest(s))
}

// suggest quotes each dot-separated part of s as written.
func suggest(s string) string {
	if strings.Contains(s, `"`) {
		return s
	}
	parts := strings.Split(strings.TrimSpace(s), ".")
	return pgx.Identifier(parts).Sanitize()
}

// Quoted is the name for SQL, every part quoted: "analytics"."Book Mirror".
func (n Name) Quoted() string {
	return pgx.Identifier(n.parts()).Sanitize()
}

// String is the canonical spelling, which Parse reads back to n: a part
// is quoted only when it must be (analytics."Book Mirror"). A mirror's
// consumer name is built from it.
func (n Name) String() string {
	parts := n.parts()
	for i, p := range parts {
		if bareLen(p) != len(p) || fold(p) != p {
			parts[i] = pgx.Identifier{p}.Sanitize()
		}
	}
	return strings.Join(parts, ".")
}

// WithSuffix names a table next to n: the same schema, the table name
// with suffix appended (a rebuild's shadow table).
func (n Name) WithSuffix(suffix string) (Name, error) {
	s := Name{Schema: n.Schema, Table: n.Table + suffix}
	if len(s.Table) > MaxLen {
		return Name{}, fmt.Errorf("table name %s is too long for its companion %s: that passes PostgreSQL's %d-byte limit for a name", n, s, MaxLen)
	}
	return s, nil
}

func (n Name) parts() []string {
	if n.Schema == "" {
		return []string{n.Table}
	}
	return []string{n.Schema, n.Table}
}
