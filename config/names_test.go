package config_test

import (
	"strings"
	"testing"
)

// TestSourceNamesAsInSQL: source.table is read as every table name ecst
// takes (internal/pgident): as in SQL. source.key and source.version
// match the query's columns regardless of case, as fields do.
func TestSourceNamesAsInSQL(t *testing.T) {
	t.Parallel()
	entity := func(source string) string {
		return "service: s\nentities:\n  customer:\n    topic: customers.state\n    schema: schemas/customer.avsc\n    source: " + source + "\n"
	}
	for source, query := range map[string]string{
		`{table: Customers, key: id}`:                                                       `SELECT * FROM "customers"`,
		`{table: sales.customers, key: id}`:                                                 `SELECT * FROM "sales"."customers"`,
		`{table: '"Book Store"."Books"', key: BookId}`:                                      `SELECT * FROM "Book Store"."Books"`,
		`{table: '"user"', key: id}`:                                                        `SELECT * FROM "user"`,
		`{query: 'SELECT "BookId", "Version" FROM "Books"', key: BookId, version: version}`: `SELECT "BookId", "Version" FROM "Books"`,
	} {
		cfg, err := load(t, entity(source), nil)
		if err != nil {
			t.Errorf("source %s: %v", source, err)
			continue
		}
		if got := cfg.Entities["customer"].Source.Query; got != query {
			t.Errorf("source %s: query %s, want %s", source, got, query)
		}
	}
	_, err := load(t, entity(`{table: Book Store.Books, key: id}`), nil)
	if err == nil || !strings.Contains(err.Error(), "entities.customer.source.table") || !strings.Contains(err.Error(), `'"Book Store"."Books"'`) {
		t.Errorf("a table name with a space: %v", err)
	}
}
