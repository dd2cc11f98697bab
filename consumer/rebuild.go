package consumer

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RebuildSuffix names the shadow table a rebuild fills.
const RebuildSuffix = "_ecst_rebuild"

// Rebuild replays the topic from offset 0 into a shadow of the store's
// table, then swaps it in, in one transaction, with its offsets. The live
// table keeps serving throughout: readers see the old model or the new
// one, never a half-built one. A consumer following the live table notices
// the swap (its offsets moved) and resumes from the new table's offsets.
//
// The shadow is created with the projection's CreateTable: indexes or
// grants added to the live table by hand must be part of it, or they are
// gone after the swap.
func Rebuild[T any](ctx context.Context, cfg Config[T], store *Postgres[T]) error {
	shadow := store.Table + RebuildSuffix
	tmpName := cfg.Name + RebuildSuffix
	if _, err := store.Pool.Exec(ctx, "DROP TABLE IF EXISTS "+quoteTable(shadow)); err != nil {
		return fmt.Errorf("drop the old shadow: %w", err)
	}
	if _, err := store.Pool.Exec(ctx, "DELETE FROM ecst.consumer_offsets WHERE consumer = $1", tmpName); err != nil {
		return fmt.Errorf("clear the shadow's offsets: %w", err)
	}
	if _, err := store.Pool.Exec(ctx, store.Projection.CreateTable(shadow)); err != nil {
		return fmt.Errorf("create the shadow table %s: %w", shadow, err)
	}
	rcfg := cfg
	rcfg.Name = tmpName
	rcfg.Store = &Postgres[T]{Pool: store.Pool, Table: shadow, Projection: store.Projection}
	rcfg.Registerer = nil
	c, err := New(rcfg)
	if err != nil {
		return err
	}
	if err := c.CatchUp(ctx); err != nil {
		return fmt.Errorf("replay into %s: %w", shadow, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return swap(ctx, store, shadow, cfg.Name, tmpName, cfg.Topic)
}

// swap puts the shadow in the live table's place, with its offsets.
func swap[T any](ctx context.Context, store *Postgres[T], shadow, name, tmpName, topic string) error {
	live := quoteTable(store.Table)
	old := quoteTable(store.Table + "_ecst_old")
	bare := func(t string) string { // RENAME TO takes an unqualified name
		parts := splitTable(t)
		return pgx.Identifier{parts[len(parts)-1]}.Sanitize()
	}
	return pgx.BeginFunc(ctx, store.Pool, func(tx pgx.Tx) error {
		// Wait for the live consumer's transaction to end, and hold off its
		// next one until the swap is committed: it then sees the new offsets.
		if err := lockModel(ctx, tx, name, topic); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", store.Table).Scan(&exists); err != nil {
			return err
		}
		stmts := []string{"DROP TABLE IF EXISTS " + old}
		if exists {
			stmts = append(stmts, "ALTER TABLE "+live+" RENAME TO "+bare(store.Table+"_ecst_old"))
		}
		stmts = append(stmts, "ALTER TABLE "+quoteTable(shadow)+" RENAME TO "+bare(store.Table))
		if exists {
			stmts = append(stmts, "DROP TABLE "+old)
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

func splitTable(t string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(t); i++ {
		if t[i] == '.' {
			parts = append(parts, t[start:i])
			start = i + 1
		}
	}
	return append(parts, t[start:])
}
