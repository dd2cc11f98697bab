package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/relay"
)

// Result is a verification's verdict, as ecst.verify_runs records it.
type Result string

// The verdicts.
const (
	// ResultInSync: nothing drifted (after a repair: the verification that
	// followed it found nothing).
	ResultInSync Result = "in_sync"
	// ResultDrift: drift found, and left (a repair, if any, did not fix it).
	ResultDrift Result = "drift"
	// ResultError: the run could not finish; Record.Error says why.
	ResultError Result = "error"
)

// ResultOf is the verdict of a run that returned rep and err.
func ResultOf(rep *Report, err error) Result {
	switch {
	case err != nil || rep == nil:
		return ResultError
	case rep.InSync():
		return ResultInSync
	}
	return ResultDrift
}

// Record is one verification as ecst.verify_runs keeps it.
type Record struct {
	// ID is the run's row in ecst.verify_runs.
	ID int64 `json:"id"`
	// Entity is the entity verified.
	Entity string `json:"entity"`
	// Topic is the entity's topic when it ran.
	Topic string `json:"topic"`
	// Mirror is the mirror table compared with the topic, as SQL names it
	// ("": none).
	Mirror string `json:"mirror,omitempty"`
	// StartedAt is when the run started.
	StartedAt time.Time `json:"started_at"`
	// FinishedAt is when it ended, repair included.
	FinishedAt time.Time `json:"finished_at"`
	// Result is the verdict (after a repair: the verification after it).
	Result Result `json:"result"`
	// Report is what the run found, as `ecst verify --json` prints it
	// (before any repair; its Repair.After is the verification after). Nil
	// when the run failed before it compared anything.
	Report *Report `json:"report,omitempty"`
	// Error is why a run with ResultError failed ("" otherwise).
	Error string `json:"error,omitempty"`
}

// Duration is how long the run took.
func (r *Record) Duration() time.Duration { return r.FinishedAt.Sub(r.StartedAt) }

// record writes a finished run into ecst.verify_runs and returns its id.
func record(ctx context.Context, q relay.Querier, e *config.Entity, mirror string, started, finished time.Time, rep *Report, runErr error) (int64, error) {
	var (
		counts [12]*int64
		report []byte
		errMsg *string
	)
	if rep != nil {
		c := []int64{rep.SourceKeys, rep.TopicKeys, rep.TopicRecords, rep.InFlight, rep.Missing, rep.Extra, rep.Stale}
		if m := rep.Mirror; m != nil {
			c = append(c, m.Rows, m.Lagging, m.Missing, m.Extra, m.Stale)
		}
		for i := range c {
			counts[i] = &c[i]
		}
		var err error
		if report, err = json.Marshal(rep); err != nil {
			return 0, fmt.Errorf("encode the report: %w", err)
		}
	}
	if runErr != nil {
		s := runErr.Error()
		errMsg = &s
	}
	if rep != nil && rep.Mirror != nil {
		mirror = rep.Mirror.Table // as SQL names it, whatever the spelling given
	}
	var mirrorArg *string
	if mirror != "" {
		mirrorArg = &mirror
	}
	rows, err := q.Query(ctx, `INSERT INTO ecst.verify_runs (entity, topic, mirror, started_at, finished_at, duration, result,
			source_keys, topic_keys, topic_records, in_flight, missing, extra, stale,
			mirror_rows, mirror_lagging, mirror_missing, mirror_extra, mirror_stale, report, error)
		VALUES ($1, $2, $3, $4, $5, $5::timestamptz - $4::timestamptz, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
		RETURNING id`,
		e.Name, e.Topic, mirrorArg, started, finished, string(ResultOf(rep, runErr)),
		counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6],
		counts[7], counts[8], counts[9], counts[10], counts[11], report, errMsg)
	if err != nil {
		return 0, recordErr(err)
	}
	id, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, recordErr(err)
	}
	return id, nil
}

func recordErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return fmt.Errorf("record the run in ecst.verify_runs: %w (the ecst schema is older than this ecst: run `ecst migrate`)", err)
	}
	return fmt.Errorf("record the run in ecst.verify_runs: %w", err)
}

const recordColumns = `id, entity, topic, coalesce(mirror, ''), started_at, finished_at, result, report, coalesce(error, '')`

func scanRecords(rows pgx.Rows) ([]Record, error) {
	var out []Record
	var r Record
	var report []byte
	_, err := pgx.ForEachRow(rows, []any{&r.ID, &r.Entity, &r.Topic, &r.Mirror, &r.StartedAt, &r.FinishedAt, &r.Result, &report, &r.Error}, func() error {
		r.Report = nil
		if report != nil {
			r.Report = &Report{}
			if err := json.Unmarshal(report, r.Report); err != nil {
				return fmt.Errorf("verify run %d: decode its report: %w", r.ID, err)
			}
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read ecst.verify_runs: %w", err)
	}
	return out, nil
}

// LastRuns returns the last recorded run of each of entities that has one,
// in the order given: one index lookup per entity, in one round trip.
func LastRuns(ctx context.Context, q relay.Querier, entities []string) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT r.* FROM unnest($1::text[]) WITH ORDINALITY AS e(name, n)
		CROSS JOIN LATERAL (SELECT `+recordColumns+` FROM ecst.verify_runs
			WHERE entity = e.name ORDER BY started_at DESC LIMIT 1) AS r
		ORDER BY e.n`, entities)
	if err != nil {
		return nil, fmt.Errorf("read ecst.verify_runs: %w", err)
	}
	return scanRecords(rows)
}

// Runs returns an entity's last runs, newest first, at most limit of them.
func Runs(ctx context.Context, q relay.Querier, entity string, limit int) ([]Record, error) {
	rows, err := q.Query(ctx, `SELECT `+recordColumns+` FROM ecst.verify_runs
		WHERE entity = $1 ORDER BY started_at DESC LIMIT $2`, entity, limit)
	if err != nil {
		return nil, fmt.Errorf("read ecst.verify_runs: %w", err)
	}
	return scanRecords(rows)
}
