// Package migrate owns every table of the ecst schema: the outbox, the
// relay's state, the republish runs, the consumers' offsets and skipped
// records. Its migrations are embedded SQL files, each applied in its own
// transaction that also records its version, serialized across processes by
// a session advisory lock.
package migrate

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.up.sql
var migrationFS embed.FS

// Migration is one embedded, versioned SQL file.
type Migration struct {
	// Version is the file's number, NNN in NNN_name.up.sql.
	Version int
	// Name is the file's name part.
	Name string
	// SQL is the file's content, run in one transaction.
	SQL string
}

// State is a migration and, if applied, when.
type State struct {
	Migration           // the migration
	AppliedAt time.Time // zero when pending
}

// Applied reports whether the migration has been applied.
func (s State) Applied() bool { return !s.AppliedAt.IsZero() }

var migrationNameRE = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.up\.sql$`)

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		m := migrationNameRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s is not named NNN_name.up.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		sql, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(sql)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("two migrations have version %d", ms[i].Version)
		}
	}
	return ms, nil
}

// Up applies every pending migration, each in its own transaction that
// also records its version. Concurrent callers are serialized by a session
// advisory lock: the second waits, then finds nothing left to do. It returns
// the migrations it applied.
func Up(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	return upTo(ctx, pool, 1<<31-1)
}

// upTo is Up with the migrations after version last left out (tests of an
// upgrade start from an older schema).
func upTo(ctx context.Context, pool *pgxpool.Pool, last int) ([]Migration, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	all = slices.DeleteFunc(all, func(m Migration) bool { return m.Version > last })
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", pglock.ECST, pglock.ObjMigrate); err != nil {
		return nil, fmt.Errorf("migrate: take migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and a lock left behind
		// would block every later migrate on this pooled connection's session.
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1, $2)", pglock.ECST, pglock.ObjMigrate); err != nil {
			conn.Conn().Close(unlockCtx) //nolint:errcheck // closing ends the session and so the lock
		}
	}()

	if _, err := conn.Exec(ctx, `
		CREATE SCHEMA IF NOT EXISTS ecst;
		CREATE TABLE IF NOT EXISTS ecst.schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
		return nil, fmt.Errorf("migrate: create ecst.schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	var done []Migration
	for _, m := range all {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO ecst.schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("migrate: apply %03d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m)
	}
	return done, nil
}

// Status lists every known migration with when it was applied. A database
// that was never migrated reports every migration pending.
func Status(ctx context.Context, pool *pgxpool.Pool) ([]State, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: connect: %w", err)
	}
	defer conn.Release()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('ecst.schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	applied := map[int]time.Time{}
	if exists {
		if applied, err = appliedVersions(ctx, conn.Conn()); err != nil {
			return nil, err
		}
	}
	out := make([]State, len(all))
	for i, m := range all {
		out[i] = State{Migration: m, AppliedAt: applied[m.Version]}
	}
	return out, nil
}

// ErrNotMigrated is returned by components that need the ecst schema when
// it is missing or behind the binary's migrations.
var ErrNotMigrated = errors.New("the ecst schema is missing or out of date: run `ecst migrate`")

// Check returns ErrNotMigrated unless every migration is applied.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	st, err := Status(ctx, pool)
	if err != nil {
		return err
	}
	for _, s := range st {
		if !s.Applied() {
			return fmt.Errorf("%w (pending: %03d_%s)", ErrNotMigrated, s.Version, s.Name)
		}
	}
	return nil
}

func appliedVersions(ctx context.Context, conn *pgx.Conn) (map[int]time.Time, error) {
	rows, err := conn.Query(ctx, "SELECT version, applied_at FROM ecst.schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read ecst.schema_migrations: %w", err)
	}
	applied := map[int]time.Time{}
	var v int
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&v, &at}, func() error { applied[v] = at; return nil })
	if err != nil {
		return nil, fmt.Errorf("read ecst.schema_migrations: %w", err)
	}
	return applied, nil
}
