package republish_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/republish"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func cfg(w *ecsttest.World) republish.Config {
	return republish.Config{Pool: w.Pool, Publisher: w.Pub, Entity: w.Entity, Kafka: w.Kafka()}
}

// liveTraffic updates, deletes and recreates keys until stop is closed.
func liveTraffic(t *testing.T, w *ecsttest.World, keys []string, writers int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := ecsttest.Rand(t, uint64(i+1))
			ctx := context.Background()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[rng.IntN(len(keys))]
				var err error
				if rng.IntN(5) == 0 {
					err = w.Delete(ctx, k)
				} else {
					_, err = w.Upsert(ctx, k)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	return &wg
}

// republishUnderTraffic runs a republish of every key while writers keep
// changing them, then returns the keys whose last record on the topic is
// not the source's state.
func republishUnderTraffic(t *testing.T, opts republish.Options, wal bool) []string {
	w := ecsttest.New(t, ecsttest.Options{WAL: wal})
	ctx := context.Background()
	keys := ecsttest.Keys(60)
	w.Seed(ctx, keys)
	stopRelay := w.StartRelay()
	stop := make(chan struct{})
	wg := liveTraffic(t, w, keys, 4, stop)
	// Three runs, so that the writers meet many batches.
	for range 3 {
		if _, err := republish.Run(ctx, cfg(w), opts); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := stopRelay(); err != nil {
		t.Fatal(err)
	}
	w.Drain()
	return w.TopicMatchesSource()
}

// TestRepublishUnderLiveTraffic: a republish of all keys while writers
// update and delete them leaves the topic's last record of every key equal
// to the source.
func TestRepublishUnderLiveTraffic(t *testing.T) {
	for _, wal := range []bool{false, true} {
		t.Run(map[bool]string{false: "table", true: "wal"}[wal], func(t *testing.T) {
			if diffs := republishUnderTraffic(t, republish.Options{All: true, Batch: 7}, wal); len(diffs) > 0 {
				t.Fatalf("%d keys differ between topic and source after a republish under live traffic:\n%s", len(diffs), strings.Join(diffs, "\n"))
			}
		})
	}
}

// TestRepublishBackpressure: with no relay running, a run stops writing
// once --max-backlog of its events wait to be published, says so, and goes
// on when a relay publishes them; in both transports.
func TestRepublishBackpressure(t *testing.T) {
	for _, wal := range []bool{false, true} {
		t.Run(map[bool]string{false: "table", true: "wal"}[wal], func(t *testing.T) {
			w := ecsttest.New(t, ecsttest.Options{WAL: wal})
			ctx := context.Background()
			keys := ecsttest.Keys(56)
			w.Seed(ctx, keys)
			w.Drain()
			logs := &testkit.Buffer{}
			c := cfg(w)
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			var written atomic.Int64
			done := make(chan error, 1)
			go func() {
				res, err := republish.Run(ctx, c, republish.Options{All: true, Batch: 7, MaxBacklog: 20,
					Progress: func(p republish.Progress) { written.Store(p.Done) }})
				if err == nil && res.Written != 56 {
					err = fmt.Errorf("wrote %d full states, want 56", res.Written)
				}
				done <- err
			}()
			if err := wait.Until(ctx, time.Minute, 10*time.Millisecond, "the run to wait for the relay", func() (bool, error) {
				return strings.Contains(logs.String(), "backlog at its limit"), nil
			}); err != nil {
				t.Fatal(err)
			}
			if n := written.Load(); n != 21 {
				t.Errorf("the run waited with %d keys written, want 21 (3 batches of 7 reach the limit of 20)", n)
			}
			stop := w.StartRelay()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// writeBetweenReadAndLock runs a republish of 56 keys in batches of 7
// where, in every batch, a live writer updates the batch's first key at
// the moment between the batch's read and its lock (readFirst) or just
// before its lock-then-read (the real order). It returns the keys whose
// last record on the topic is not the source's state.
func writeBetweenReadAndLock(t *testing.T, readFirst, wal bool) []string {
	w := ecsttest.New(t, ecsttest.Options{WAL: wal})
	ctx := context.Background()
	keys := ecsttest.Keys(56)
	w.Seed(ctx, keys)
	batch := 0
	write := func() {
		if _, err := w.Upsert(ctx, keys[7*batch]); err != nil {
			t.Error(err)
		}
		batch++
	}
	opts := republish.Options{All: true, Batch: 7}
	if readFirst {
		republish.ReadBeforeLock(&opts, write)
	} else {
		republish.BeforeLock(&opts, write)
	}
	if _, err := republish.Run(ctx, cfg(w), opts); err != nil {
		t.Fatal(err)
	}
	w.Drain()
	return w.TopicMatchesSource()
}

// TestRepublishOrderNeedsTheLock: a live write that commits between a
// batch's read and its lock leaves the key stale when the batch reads
// first; with the lock taken first, the same interleaving converges. This
// is what the lock-then-read order is for, in both transports: the WAL
// delivers in commit order, and the stale state commits last.
func TestRepublishOrderNeedsTheLock(t *testing.T) {
	for _, wal := range []bool{false, true} {
		t.Run(map[bool]string{false: "table", true: "wal"}[wal], func(t *testing.T) {
			diffs := writeBetweenReadAndLock(t, true, wal)
			if len(diffs) != 8 {
				t.Fatalf("reading before the lock left %d keys stale, want the 8 written between read and lock:\n%s", len(diffs), strings.Join(diffs, "\n"))
			}
			t.Logf("reading before the lock: %d keys stale, e.g. %s", len(diffs), diffs[0])
			if diffs := writeBetweenReadAndLock(t, false, wal); len(diffs) > 0 {
				t.Fatalf("locking first, %d keys differ:\n%s", len(diffs), strings.Join(diffs, "\n"))
			}
		})
	}
}

func TestRepublishResume(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	keys := ecsttest.Keys(500)
	w.Seed(ctx, keys)
	w.Drain()

	// Stop the run at 40%.
	runCtx, cancel := context.WithCancel(ctx)
	var progressed []republish.Progress
	opts := republish.Options{All: true, Batch: 25, Progress: func(p republish.Progress) {
		progressed = append(progressed, p)
		if p.Done >= 200 {
			cancel()
		}
	}}
	res, err := republish.Run(runCtx, cfg(w), opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run stopped at 40%%: err %v, want context.Canceled", err)
	}
	if res.Written != 200 || res.Selected != 500 {
		t.Fatalf("stopped run: written %d of %d, want 200 of 500", res.Written, res.Selected)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("resume it with republish.Options{Resume: %d}", res.RunID)) {
		t.Errorf("error does not say how to resume: %v", err)
	}
	var state string
	if err := w.Pool.QueryRow(ctx, `SELECT state FROM ecst.republish_runs WHERE id = $1`, res.RunID).Scan(&state); err != nil || state != "cancelled" {
		t.Fatalf("run state %q (%v), want cancelled", state, err)
	}

	res2, err := republish.Run(ctx, cfg(w), republish.Options{Resume: res.RunID})
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Resumed || res2.RunID != res.RunID || res2.Written != 500 || res2.Selected != 500 {
		t.Fatalf("resumed run: %+v, want run %d resumed with 500 of 500 written", res2, res.RunID)
	}
	// Every key once, in order: the outbox holds exactly one pending row
	// per key, written before or after the stop.
	rows, err := w.Pool.Query(ctx, `SELECT key FROM (`+outbox.PendingSQL+`) p ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		got = append(got, k)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("outbox after stop + resume holds %d rows, want each of the %d keys once in key order", len(got), len(keys))
	}
	var written, selected int64
	if err := w.Pool.QueryRow(ctx, `SELECT rows_written, rows_selected, state FROM ecst.republish_runs WHERE id = $1`, res.RunID).Scan(&written, &selected, &state); err != nil {
		t.Fatal(err)
	}
	if written != 500 || selected != 500 || state != "completed" {
		t.Fatalf("run row: written %d selected %d state %s", written, selected, state)
	}
	if _, err := republish.Run(ctx, cfg(w), republish.Options{Resume: res.RunID}); err == nil {
		t.Fatal("resuming a completed run succeeded")
	}
	w.Drain()
	for _, r := range w.Latest() {
		if h := header(r.Headers, producer.HeaderRepublish); h != fmt.Sprint(res.RunID) {
			t.Fatalf("record of %s has ecst-republish %q, want %d", r.Key, h, res.RunID)
		}
	}
	if d := w.TopicMatchesSource(); len(d) > 0 {
		t.Fatal(d)
	}
}

func header(hs []kgo.RecordHeader, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestRepublishRefusesASecondRun(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(40))
	started := make(chan struct{})
	var once sync.Once
	slowCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := republish.Run(slowCtx, cfg(w), republish.Options{All: true, Batch: 1, Rate: 5, // 8 s: longer than a second run waits for the lock
			Progress: func(republish.Progress) { once.Do(func() { close(started) }) }})
		done <- err
	}()
	<-started
	_, err := republish.Run(ctx, cfg(w), republish.Options{All: true})
	if !errors.Is(err, republish.ErrRunning) {
		t.Fatalf("second run: %v, want ErrRunning", err)
	}
	if !regexp.MustCompile(`resume it with republish\.Options\{Resume: \d+\}`).MatchString(err.Error()) {
		t.Errorf("refusal does not name the running run: %v", err)
	}
	cancel()
	<-done
}

// TestRepublishWaitsForADeadRunsLock: a run killed a moment ago still
// holds the entity's lock until its session ends; a run started then
// waits for it instead of being refused.
func TestRepublishWaitsForADeadRunsLock(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(3))
	holder, err := pgx.Connect(ctx, w.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, pglock.Republish, pglock.Hash(w.Entity.Name)); err != nil {
		t.Fatal(err)
	}
	// The session ends half a second later, as a killed process's does
	// once the server sees its socket close.
	time.AfterFunc(500*time.Millisecond, func() { holder.Close(context.Background()) })
	res, err := republish.Run(ctx, cfg(w), republish.Options{All: true})
	if err != nil {
		t.Fatalf("run after the holder's session ended: %v", err)
	}
	if res.Written != 3 {
		t.Errorf("wrote %d rows, want 3", res.Written)
	}
}

func TestRepublishUnmappableColumnWritesNothing(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(3))
	w.Exec(`DELETE FROM ecst.outbox`)
	w.Exec(`ALTER TABLE customers ADD COLUMN secret_score int`)
	w.Entity.Source.Query = `SELECT id, version, name, email, tier, updated_at, secret_score FROM customers`
	_, err := republish.Run(ctx, cfg(w), republish.Options{All: true})
	if err == nil || !strings.Contains(err.Error(), `column "secret_score" has no field`) {
		t.Fatalf("err = %v, want one naming column secret_score", err)
	}
	w.Entity.Source.Query = `SELECT id, version, name, email::bytea AS email, tier, updated_at FROM customers`
	_, err = republish.Run(ctx, cfg(w), republish.Options{All: true})
	if err == nil || !strings.Contains(err.Error(), `column "email" (bytea) cannot feed field "email" (string)`) {
		t.Fatalf("err = %v, want one naming column email and its types", err)
	}
	var n int
	_ = w.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM ecst.outbox) + (SELECT count(*) FROM ecst.republish_runs)`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d outbox rows or runs written by a refused republish", n)
	}
}

func TestRepublishTombstonesOrphans(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	keys := ecsttest.Keys(30)
	w.Seed(ctx, keys)
	w.Drain()
	// Rows deleted behind ecst's back: their keys stay alive on the topic.
	w.Exec(`DELETE FROM customers WHERE id IN ('c00003', 'c00007', 'c00029')`)

	dry, err := republish.Run(ctx, cfg(w), republish.Options{All: true, TombstoneOrphans: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Selected != 27 || dry.Orphans != 3 || len(dry.Sample) != 5 || dry.Sample[0].Key != "c00000" || dry.RunID != 0 {
		t.Fatalf("dry run: %+v", dry)
	}
	var n int64
	_ = w.Pool.QueryRow(ctx, `SELECT count(*) FROM ecst.republish_runs`).Scan(&n)
	if pending, err := outbox.PendingCount(ctx, w.Pool, 0); err != nil || n+pending != 0 {
		t.Fatalf("a dry run wrote %d rows (err %v)", n+pending, err)
	}

	res, err := republish.Run(ctx, cfg(w), republish.Options{All: true, TombstoneOrphans: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 27 || res.Tombstones != 3 || res.Orphans != 3 {
		t.Fatalf("result %+v, want 27 written, 3 orphans tombstoned", res)
	}
	w.Drain()
	if d := w.TopicMatchesSource(); len(d) > 0 {
		t.Fatal(d)
	}
	if r := w.Latest()["c00007"]; r.Value != nil || header(r.Headers, producer.HeaderEventType) != "customer.deleted" {
		t.Fatalf("orphan c00007: latest record %v", r)
	}
}

func TestRepublishSelections(t *testing.T) {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Seed(ctx, ecsttest.Keys(20))
	w.Exec(`DELETE FROM ecst.outbox`)
	count := func() int {
		var n int
		_ = w.Pool.QueryRow(ctx, `SELECT count(*) FROM ecst.outbox`).Scan(&n)
		w.Exec(`DELETE FROM ecst.outbox`)
		return n
	}
	res, err := republish.Run(ctx, cfg(w), republish.Options{Keys: []string{"c00002", "c00001", "nope", "c00001"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Selected != 3 || res.Written != 2 || res.Vanished != 1 || count() != 2 {
		t.Fatalf("--key: %+v", res)
	}
	res, err = republish.Run(ctx, cfg(w), republish.Options{Keys: []string{"nope"}, TombstoneOrphans: true})
	if err != nil || res.Tombstones != 1 || count() != 1 {
		t.Fatalf("--key nope --tombstone-orphans: %+v %v", res, err)
	}
	res, err = republish.Run(ctx, cfg(w), republish.Options{Where: "id >= 'c00015'", Batch: 2})
	if err != nil || res.Selected != 5 || res.Written != 5 || count() != 5 {
		t.Fatalf("--where: %+v %v", res, err)
	}
	if _, err := republish.Run(ctx, cfg(w), republish.Options{Where: "no_such_column = 1"}); err == nil || !strings.Contains(err.Error(), `republish.Options.Where "no_such_column = 1" does not run`) {
		t.Fatalf("bad --where: %v", err)
	}
	// The errors name the Options fields (the CLI translates them to flags).
	for _, o := range []republish.Options{{}, {All: true, Keys: []string{"a"}}} {
		if _, err := republish.Run(ctx, cfg(w), o); !errors.Is(err, republish.ErrBadSelection) || !strings.Contains(err.Error(), "republish.Options.All, republish.Options.Keys") {
			t.Fatalf("options %+v: %v, want ErrBadSelection naming the fields", o, err)
		}
	}
}
