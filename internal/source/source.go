// Package source reads an entity's source of truth, the rows its
// ecst.yaml source query returns, mapped onto the entity's Avro schema.
// Republish and verify share it.
package source

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pgavro"
	"github.com/ecst-io/ecst/schemas"
)

// Source is a planned source query.
type Source struct {
	Query   string // the source query as a subquery: (query) AS src
	KeyCol  string // the key column, qualified and quoted: src."id"
	KeyType string // its SQL type
	Mapper  *pgavro.Mapper
}

// Plan describes e's source query on conn and maps its columns onto e's
// schema: an unmappable column is an error naming it.
func Plan(ctx context.Context, conn *pgx.Conn, e *config.Entity) (*Source, error) {
	if e.Source == nil {
		return nil, fmt.Errorf("entity %s has no source: add entities.%s.source (table, key, query) to ecst.yaml", e.Name, e.Name)
	}
	s := &Source{Query: "(" + strings.TrimRight(strings.TrimSpace(e.Source.Query), ";") + ") AS src"}
	desc, err := conn.Prepare(ctx, "", "SELECT * FROM "+s.Query)
	if err != nil {
		return nil, fmt.Errorf("entities.%s.source.query does not run: %w", e.Name, err)
	}
	cols := make([]pgavro.Column, len(desc.Fields))
	for i, f := range desc.Fields {
		cols[i] = pgavro.Column{Name: f.Name, OID: f.DataTypeOID}
	}
	schema, err := schemas.Parse(e.SchemaText)
	if err != nil {
		return nil, err
	}
	if s.Mapper, err = pgavro.New(schema, cols, pgavro.Options{Key: e.Source.Key, Version: e.Source.Version}); err != nil {
		return nil, fmt.Errorf("entity %s: %w", e.Name, err)
	}
	for _, f := range desc.Fields {
		// The key column is found as the mapper found it, regardless of
		// case, and named as the query's result names it: src."BookId".
		if strings.EqualFold(f.Name, e.Source.Key) {
			s.KeyCol = "src." + pgx.Identifier{f.Name}.Sanitize()
			if err := conn.QueryRow(ctx, `SELECT format_type($1, NULL)`, f.DataTypeOID).Scan(&s.KeyType); err != nil {
				return nil, fmt.Errorf("key column type: %w", err)
			}
		}
	}
	return s, nil
}

// RowsSQL reads the current rows of the keys given as a text array in $1.
func (s *Source) RowsSQL() string {
	return fmt.Sprintf(`SELECT * FROM %s WHERE %s = ANY($1::text[]::%s[])`, s.Query, s.KeyCol, s.KeyType)
}

// AllSQL reads every row.
func (s *Source) AllSQL() string { return "SELECT * FROM " + s.Query }

// KeysSQL reads every key as text.
func (s *Source) KeysSQL() string { return fmt.Sprintf(`SELECT %s::text FROM %s`, s.KeyCol, s.Query) }
