package consumer

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/internal/pgident"
)

// RebuildSuffix names the shadow table a rebuild fills.
const RebuildSuffix = "_ecst_rebuild"

// oldSuffix names the live table while a swap moves it away.
const oldSuffix = "_ecst_old"

// Rebuild replays the topic from offset 0 into a shadow of the store's
// table, then swaps it in, in one transaction, with its offsets. The live
// table keeps serving throughout: readers see the old model or the new
// one, never a half-built one. A consumer following the live table notices
// the swap (its offsets moved) and resumes from the new table's offsets.
//
// The shadow, <table>_ecst_rebuild in the table's schema, is created with
// the projection's CreateTable: indexes or grants added to the live table
// by hand must be part of it, or they are gone after the swap.
func Rebuild[T any](ctx context.Context, cfg Config[T], store *Postgres[T]) error {
	live, err := pgident.Parse(store.Table)
	if err != nil {
		return fmt.Errorf("rebuild: consumer.Postgres.Table: %w", err)
	}
	shadow, err := live.WithSuffix(RebuildSuffix)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	old, err := live.WithSuffix(oldSuffix)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	tmpName := cfg.Name + RebuildSuffix
	if _, err := store.Pool.Exec(ctx, "DROP TABLE IF EXISTS "+shadow.Quoted()); err != nil {
		return fmt.Errorf("drop the old shadow: %w", err)
	}
	if _, err := store.Pool.Exec(ctx, "DELETE FROM ecst.consumer_offsets WHERE consumer = $1", tmpName); err != nil {
		return fmt.Errorf("clear the shadow's offsets: %w", err)
	}
	if _, err := store.Pool.Exec(ctx, store.Projection.CreateTable(shadow.Quoted())); err != nil {
		return fmt.Errorf("create the shadow table %s: %w", shadow, err)
	}
	rcfg := cfg
	rcfg.Name = tmpName
	rcfg.Store = &Postgres[T]{Pool: store.Pool, Table: shadow.Quoted(), Projection: store.Projection}
	rcfg.Registerer = nil
	c, err := New(rcfg)
	if err != nil {
		return err
	}
	if err := c.CatchUp(ctx); err != nil {
		return fmt.Errorf("replay into %s: %w", shadow, err)
	}
	return swap(ctx, store.Pool, live, shadow, old, cfg.Name, tmpName, cfg.Topic)
}

// swap puts the shadow in the live table's place, with its offsets.
func swap(ctx context.Context, pool *pgxpool.Pool, live, shadow, old pgident.Name, name, tmpName, topic string) error {
	// RENAME TO takes an unqualified name: the table stays in its schema.
	renameTo := func(n pgident.Name) string { return " RENAME TO " + pgx.Identifier{n.Table}.Sanitize() }
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Wait for the live consumer's transaction to end, and hold off its
		// next one until the swap is committed: it then sees the new offsets.
		if err := lockModel(ctx, tx, name, topic); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", live.Quoted()).Scan(&exists); err != nil {
			return err
		}
		stmts := []string{"DROP TABLE IF EXISTS " + old.Quoted()}
		if exists {
			stmts = append(stmts, "ALTER TABLE "+live.Quoted()+renameTo(old))
		}
		stmts = append(stmts, "ALTER TABLE "+shadow.Quoted()+renameTo(live))
		if exists {
			stmts = append(stmts, "DROP TABLE "+old.Quoted())
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("swap: %s: %w", s, err)
			}
		}
		if _, err := tx.Exec(ctx, "DELETE FROM ecst.consumer_offsets WHERE consumer = $1 AND topic = $2", name, topic); err != nil {
			return err
		}
		// An empty topic leaves no offsets: the live consumer then starts
		// from the beginning, which is where the empty model is.
		_, err := tx.Exec(ctx, "UPDATE ecst.consumer_offsets SET consumer = $1, updated_at = now() WHERE consumer = $2 AND topic = $3", name, tmpName, topic)
		return err
	})
}
