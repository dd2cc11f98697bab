// Package capture makes every write to an entity's source tables publish
// the entity's full state, whatever wrote it: psql, a migration's backfill,
// COPY, a service in another language.
//
// Enable installs, on the entity's source table and on each of its
// source.capture_from tables, statement-level AFTER triggers with
// transition tables: a statement, however many rows it touches, calls
// ecst.capture(entity, keys) once, which writes one marker into the outbox
// in the writer's transaction (migration 004). The relay resolves markers
// (Resolver): under the keys' locks it reads their current state through
// the entity's source query and writes those events behind everything
// already in the outbox, as republish does. docs/architecture.md,
// "Capture", has the argument for per-key order with mixed writers.
package capture

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/pgident"
	"github.com/ecst-io/ecst/internal/source"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// Errors callers branch on.
var (
	// ErrNoSource: the entity has no source in ecst.yaml.
	ErrNoSource = errors.New("the entity has no source")
	// ErrRefused: a check before any DDL failed; the message names the fix.
	ErrRefused = errors.New("capture refused")
)

// Table is one table a capture is installed on.
type Table struct {
	// Name is the table, schema-qualified as the database resolved it.
	Name string `json:"table"`
	// Key is its column holding the entity key.
	Key string `json:"key"`
	// Function is the trigger function, ecst."capture_<entity>_<hash>".
	Function string `json:"function"`
	// Triggers are the trigger names on the table, one per event.
	Triggers []string `json:"triggers"`
}

// Plan is what Enable installs (or, dry, would install).
type Plan struct {
	// Entity is the entity's name.
	Entity string `json:"entity"`
	// Tables are the tables captured, with what is installed on each.
	Tables []Table `json:"tables"`
	// Stale are tables installed before that ecst.yaml no longer lists:
	// Enable removes their capture.
	Stale []Table `json:"stale,omitempty"`
	// DDL are the statements, run in one transaction.
	DDL []string `json:"ddl"`
}

// events are the trigger events, each with its own trigger: PostgreSQL
// allows transition tables only on single-event triggers.
var events = []struct{ suffix, event, referencing string }{
	{"ins", "INSERT", "REFERENCING NEW TABLE AS ecst_new"},
	{"upd", "UPDATE", "REFERENCING OLD TABLE AS ecst_old NEW TABLE AS ecst_new"},
	{"del", "DELETE", "REFERENCING OLD TABLE AS ecst_old"},
	{"trunc", "TRUNCATE", ""},
}

// Enable installs e's capture, or with dry only plans it. Every check runs
// before any DDL: a table or key column that does not exist, a table the
// role does not own, a source query that cannot be filtered by key are
// each refused with the fix. It is idempotent: the functions are replaced
// and the triggers dropped and created again, in one transaction.
func Enable(ctx context.Context, pool *pgxpool.Pool, e *config.Entity, dry bool) (*Plan, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Release()
	p, err := plan(ctx, conn.Conn(), e)
	if err != nil {
		return nil, err
	}
	if dry {
		return p, nil
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, s := range p.DDL {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%w\n  in: %s", err, firstLine(s))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("enable capture of %s: %w", e.Name, err)
	}
	return p, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// want is a table the config asks capture on.
type want struct {
	name  string // as written in ecst.yaml
	key   string
	field string // the ecst.yaml field that names it
}

func wanted(e *config.Entity) []want {
	var ws []want
	if e.Source.Table != "" {
		ws = append(ws, want{e.Source.Table, e.Source.Key, fmt.Sprintf("entities.%s.source.table", e.Name)})
	}
	for i, c := range e.Source.CaptureFrom {
		ws = append(ws, want{c.Table, c.Key, fmt.Sprintf("entities.%s.source.capture_from[%d]", e.Name, i)})
	}
	return ws
}

// plan checks everything and builds the DDL.
func plan(ctx context.Context, conn *pgx.Conn, e *config.Entity) (*Plan, error) {
	if e.Source == nil {
		return nil, fmt.Errorf("%w: add entities.%s.source (table, key, query) to ecst.yaml: capture reads the state through it", ErrNoSource, e.Name)
	}
	ws := wanted(e)
	if len(ws) == 0 {
		return nil, fmt.Errorf("%w: entities.%s.source names no table: set source.table, or list the tables the query reads in source.capture_from", ErrRefused, e.Name)
	}
	if err := checkSource(ctx, conn, e); err != nil {
		return nil, err
	}
	p := &Plan{Entity: e.Name}
	seen := map[string]bool{}
	for _, w := range ws {
		t, err := checkTable(ctx, conn, e.Name, w)
		if err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: %s names table %s a second time; list each table once", ErrRefused, w.field, t.Name)
		}
		seen[t.Name] = true
		p.Tables = append(p.Tables, t)
	}
	installed, err := Installed(ctx, conn, e.Name)
	if err != nil {
		return nil, err
	}
	for _, t := range installed {
		if !seen[t.Name] {
			p.Stale = append(p.Stale, t)
			p.DDL = append(p.DDL, dropDDL(ctx, conn, e.Name, t)...)
		}
	}
	for _, t := range p.Tables {
		p.DDL = append(p.DDL, installDDL(e.Name, t)...)
	}
	return p, nil
}

// checkSource refuses a source query that cannot be read by key: the
// resolution reads `SELECT * FROM (query) src WHERE src.key = ANY($1)`.
func checkSource(ctx context.Context, conn *pgx.Conn, e *config.Entity) error {
	src, err := source.Plan(ctx, conn, e)
	if err != nil {
		return fmt.Errorf("%w: entities.%s.source.query cannot be filtered by key (the relay reads captured keys with SELECT * FROM (query) src WHERE src.%s = ANY($1)): %w",
			ErrRefused, e.Name, e.Source.Key, err)
	}
	if src.KeyCol == "" {
		return fmt.Errorf("%w: entities.%s.source.query returns no column %q: select the key column (source.key) so that capture can read the changed keys", ErrRefused, e.Name, e.Source.Key)
	}
	if _, err := conn.Prepare(ctx, "", src.RowsSQL()); err != nil {
		return fmt.Errorf("%w: entities.%s.source.query cannot be filtered by key (%s): %w; make the query return the key column %q as a plain column",
			ErrRefused, e.Name, src.RowsSQL(), err, e.Source.Key)
	}
	return nil
}

// checkTable finds w's table and key column and checks that the role owns
// the table (creating and dropping triggers needs it).
func checkTable(ctx context.Context, conn *pgx.Conn, entity string, w want) (Table, error) {
	name, err := pgident.Parse(w.name)
	if err != nil {
		return Table{}, fmt.Errorf("%w: %s: %w", ErrRefused, w.field, err)
	}
	var (
		oid      *uint32
		qualName string
		kind     string
		owner    string
		owns     bool
	)
	err = conn.QueryRow(ctx, `SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind::text, pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, name.Quoted()).Scan(&oid, &qualName, &kind, &owner, &owns)
	if errors.Is(err, pgx.ErrNoRows) {
		return Table{}, fmt.Errorf("%w: table %s does not exist (%s): create it, or fix the name", ErrRefused, w.name, w.field)
	}
	if err != nil {
		return Table{}, fmt.Errorf("look up table %s: %w", w.name, err)
	}
	if kind != "r" && kind != "p" {
		return Table{}, fmt.Errorf("%w: %s is not a table (relkind %s) (%s): capture triggers go on the tables a view reads; list those", ErrRefused, qualName, kind, w.field)
	}
	var col string
	err = conn.QueryRow(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND (attname = $2 OR lower(attname) = lower($2))
		ORDER BY attname = $2 DESC LIMIT 1`, *oid, w.key).Scan(&col)
	if errors.Is(err, pgx.ErrNoRows) {
		cols, _ := columns(ctx, conn, *oid)
		return Table{}, fmt.Errorf("%w: table %s has no column %q (%s.key; it has %s): name the column that holds the %s id", ErrRefused, qualName, w.key, strings.TrimSuffix(w.field, ".table"), strings.Join(cols, ", "), entity)
	}
	if err != nil {
		return Table{}, fmt.Errorf("look up column %s of %s: %w", w.key, qualName, err)
	}
	if !owns {
		return Table{}, fmt.Errorf("%w: table %s is owned by %s, not by this role: triggers need the owner; run `ecst capture enable %s` as %s (or a member of it), or ALTER TABLE %s OWNER TO this role", ErrRefused, qualName, owner, entity, owner, qualName)
	}
	fn := functionName(entity, qualName)
	if len(fn) > pgident.MaxLen || len(triggerName(entity, "trunc")) > pgident.MaxLen {
		return Table{}, fmt.Errorf("%w: entity name %s is too long for capture's trigger names (PostgreSQL keeps %d bytes); shorten it", ErrRefused, entity, pgident.MaxLen)
	}
	t := Table{Name: qualName, Key: col, Function: "ecst." + pgx.Identifier{fn}.Sanitize()}
	for _, ev := range events {
		t.Triggers = append(t.Triggers, triggerName(entity, ev.suffix))
	}
	return t, nil
}

func columns(ctx context.Context, conn *pgx.Conn, oid uint32) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func functionName(entity, table string) string {
	h := fnv.New32a()
	h.Write([]byte(table))
	return fmt.Sprintf("capture_%s_%08x", entity, h.Sum32())
}

func triggerName(entity, suffix string) string { return "ecst_capture_" + entity + "_" + suffix }

// installDDL creates t's trigger function and triggers, and records them.
func installDDL(entity string, t Table) []string {
	lit := quoteLiteral(entity)
	key := pgx.Identifier{t.Key}.Sanitize()
	fn := fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $ecst$
BEGIN
    -- ecst capture of entity %s on %s: one marker per statement.
    IF TG_OP = 'INSERT' THEN
        PERFORM ecst.capture(%s, ARRAY(SELECT DISTINCT %s::text FROM ecst_new));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM ecst.capture(%s, ARRAY(SELECT %s::text FROM ecst_new UNION SELECT %s::text FROM ecst_old));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM ecst.capture(%s, ARRAY(SELECT DISTINCT %s::text FROM ecst_old));
    ELSE
        PERFORM ecst.capture_all(%s);
    END IF;
    RETURN NULL;
END
$ecst$`, t.Function, entity, t.Name, lit, key, lit, key, key, lit, key, lit)
	ddl := []string{fn}
	for i, ev := range events {
		trig := pgx.Identifier{t.Triggers[i]}.Sanitize()
		ddl = append(ddl,
			fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", trig, t.Name),
			strings.Join(strings.Fields(fmt.Sprintf("CREATE TRIGGER %s AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s()",
				trig, ev.event, t.Name, ev.referencing, t.Function)), " "))
	}
	ddl = append(ddl, fmt.Sprintf(`INSERT INTO ecst.capture_tables (entity, table_name, key_column, function, triggers)
VALUES (%s, %s, %s, %s, ARRAY[%s])
ON CONFLICT (entity, table_name) DO UPDATE SET key_column = EXCLUDED.key_column, function = EXCLUDED.function, triggers = EXCLUDED.triggers, installed_at = now()`,
		lit, quoteLiteral(t.Name), quoteLiteral(t.Key), quoteLiteral(t.Function), quoteLiterals(t.Triggers)))
	return ddl
}

// dropDDL removes what was installed on t. A table dropped since has taken
// its triggers with it.
func dropDDL(ctx context.Context, conn *pgx.Conn, entity string, t Table) []string {
	var ddl []string
	var exists bool
	_ = conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.Name).Scan(&exists)
	if exists {
		for _, trig := range t.Triggers {
			ddl = append(ddl, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", pgx.Identifier{trig}.Sanitize(), t.Name))
		}
	}
	return append(ddl, fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", t.Function),
		fmt.Sprintf("DELETE FROM ecst.capture_tables WHERE entity = %s AND table_name = %s", quoteLiteral(entity), quoteLiteral(t.Name)))
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func quoteLiterals(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quoteLiteral(s)
	}
	return strings.Join(q, ", ")
}

// Installed lists what ecst.capture_tables records for entity.
func Installed(ctx context.Context, q outbox.Querier, entity string) ([]Table, error) {
	rows, err := q.Query(ctx, `SELECT table_name, key_column, function, triggers FROM ecst.capture_tables WHERE entity = $1 ORDER BY table_name`, entity)
	if err != nil {
		return nil, fmt.Errorf("read ecst.capture_tables: %w", err)
	}
	var out []Table
	var t Table
	if _, err := pgx.ForEachRow(rows, []any{&t.Name, &t.Key, &t.Function, &t.Triggers}, func() error {
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read ecst.capture_tables: %w", err)
	}
	return out, nil
}

// Disable removes every object Enable installed for entity (as recorded
// in ecst.capture_tables, whatever ecst.yaml says now), in one
// transaction, or with dry only lists the DDL. Disabling an entity
// without capture does nothing.
func Disable(ctx context.Context, pool *pgxpool.Pool, entity string, dry bool) (*Plan, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	defer conn.Release()
	installed, err := Installed(ctx, conn, entity)
	if err != nil {
		return nil, err
	}
	p := &Plan{Entity: entity, Stale: installed}
	for _, t := range installed {
		p.DDL = append(p.DDL, dropDDL(ctx, conn.Conn(), entity, t)...)
	}
	if dry || len(p.DDL) == 0 {
		return p, nil
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, s := range p.DDL {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%w\n  in: %s", err, s)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("disable capture of %s: %w", entity, err)
	}
	return p, nil
}

// Status is one entity's capture, as the database has it.
type Status struct {
	// Entity is the entity's name.
	Entity string `json:"entity"`
	// Enabled is true when ecst.capture_tables records a capture of it.
	Enabled bool `json:"enabled"`
	// Tables are the captured tables and whether their objects exist.
	Tables []TableStatus `json:"tables"`
	// Missing are tables ecst.yaml lists that have no capture installed
	// (run `ecst capture enable` again).
	Missing []string `json:"missing,omitempty"`
	// Pending are markers the relay has not resolved yet, counted among
	// the first PendingCap pending rows of the outbox's shard 0 (where
	// markers go); PendingCapped says the count stopped there. With the
	// WAL transport markers wait in the slot, where they are not counted:
	// PendingUncounted is set (the relay's lag shows them).
	Pending          int64 `json:"markers_pending"`
	PendingCapped    bool  `json:"markers_pending_capped,omitempty"`
	PendingUncounted bool  `json:"markers_pending_uncounted,omitempty"`
}

// PendingText is Pending as a human reads it: "≥ N" past the cap, "-"
// uncounted.
func (s Status) PendingText() string {
	switch {
	case s.PendingUncounted:
		return "-"
	case s.PendingCapped:
		return fmt.Sprintf("≥ %d", s.Pending)
	}
	return strconv.FormatInt(s.Pending, 10)
}

// PendingCap bounds the outbox rows StatusOf reads to count markers.
const PendingCap = 10_000

// TableStatus is one captured table and whether its objects are there.
type TableStatus struct {
	// Table is what was installed.
	Table
	// FunctionPresent says whether the trigger function exists.
	FunctionPresent bool `json:"function_present"`
	// TriggersPresent says, per trigger name, whether it exists.
	TriggersPresent map[string]bool `json:"triggers_present"`
}

// Healthy reports whether every installed object is present and no
// configured table lacks capture.
func (s Status) Healthy() bool {
	if len(s.Missing) > 0 {
		return false
	}
	for _, t := range s.Tables {
		if !t.FunctionPresent {
			return false
		}
		for _, ok := range t.TriggersPresent {
			if !ok {
				return false
			}
		}
	}
	return true
}

// StatusOf reports the capture of every entity in cfg, and of any other
// entity ecst.capture_tables records. Its queries are bounded: an entity
// without capture costs none of its own.
func StatusOf(ctx context.Context, pool outbox.Querier, cfg *config.Config) ([]Status, error) {
	rows, err := pool.Query(ctx, `SELECT DISTINCT entity FROM ecst.capture_tables`)
	if err != nil {
		return nil, fmt.Errorf("read ecst.capture_tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read ecst.capture_tables: %w", err)
	}
	enabled := slices.Clone(names)
	names = append(names, cfg.EntityNames()...)
	slices.Sort(names)
	names = slices.Compact(names)
	transport, err := outbox.DatabaseTransport(ctx, pool)
	if err != nil {
		return nil, err
	}
	pending, capped := map[string]int64{}, false
	if transport == outbox.TransportTable {
		if pending, capped, err = pendingMarkers(ctx, pool, PendingCap); err != nil {
			return nil, err
		}
	}
	var out []Status
	for _, n := range names {
		s := Status{Entity: n, Pending: pending[n], PendingCapped: capped, PendingUncounted: transport != outbox.TransportTable}
		if !slices.Contains(enabled, n) {
			out = append(out, s)
			continue
		}
		installed, err := Installed(ctx, pool, n)
		if err != nil {
			return nil, err
		}
		s.Enabled = len(installed) > 0
		have := map[string]bool{}
		for _, t := range installed {
			ts, err := tableStatus(ctx, pool, t)
			if err != nil {
				return nil, err
			}
			have[t.Name] = true
			s.Tables = append(s.Tables, ts)
		}
		if e := cfg.Entities[n]; s.Enabled && e != nil && e.Source != nil {
			for _, w := range wanted(e) {
				var name *string
				if err := pool.QueryRow(ctx, `SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1))`,
					quotedOr(w.name)).Scan(&name); err != nil {
					return nil, err
				}
				if name == nil || !have[*name] {
					s.Missing = append(s.Missing, w.name)
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func quotedOr(name string) string {
	if n, err := pgident.Parse(name); err == nil {
		return n.Quoted()
	}
	return name
}

func tableStatus(ctx context.Context, q outbox.Querier, t Table) (TableStatus, error) {
	ts := TableStatus{Table: t, TriggersPresent: map[string]bool{}}
	if err := q.QueryRow(ctx, `SELECT to_regprocedure($1 || '()') IS NOT NULL`, t.Function).Scan(&ts.FunctionPresent); err != nil {
		return ts, fmt.Errorf("look up %s: %w", t.Function, err)
	}
	rows, err := q.Query(ctx, `SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2)`, t.Name, t.Triggers)
	if err != nil {
		return ts, fmt.Errorf("look up the triggers of %s: %w", t.Name, err)
	}
	present, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return ts, fmt.Errorf("look up the triggers of %s: %w", t.Name, err)
	}
	for _, tr := range t.Triggers {
		ts.TriggersPresent[tr] = slices.Contains(present, tr)
	}
	return ts, nil
}

// pendingMarkers counts the markers not yet resolved, by entity, among the
// first limit pending rows of shard 0 (where markers go); capped says the
// read stopped there.
func pendingMarkers(ctx context.Context, q outbox.Querier, limit int) (map[string]int64, bool, error) {
	rows, err := q.Query(ctx, `SELECT key, count(*) FILTER (WHERE topic = $2), sum(count(*)) OVER () FROM (
		SELECT topic, key FROM (`+outbox.PendingShardSQL+`) p LIMIT $3) m GROUP BY key`, 0, relay.MarkerTopic, limit)
	if err != nil {
		return nil, false, fmt.Errorf("count the pending capture markers: %w", err)
	}
	out := map[string]int64{}
	var k string
	var n, read int64
	capped := false
	if _, err := pgx.ForEachRow(rows, []any{&k, &n, &read}, func() error {
		if n > 0 {
			out[k] = n
		}
		capped = read >= int64(limit)
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("count the pending capture markers: %w", err)
	}
	return out, capped, nil
}
