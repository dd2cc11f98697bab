package status_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/capture"
	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pglock"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/status"
	"github.com/ecst-io/ecst/internal/topics"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/verify"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// system is a world whose topic matches ecst.yaml, and a way to take its
// snapshot.
type system struct {
	*ecsttest.World
	adm *kadm.Client
	o   status.Options
}

func newSystem(t *testing.T) *system { return newSystemWith(t, ecsttest.Options{}) }

func newSystemWith(t *testing.T, opts ecsttest.Options) *system {
	w := ecsttest.New(t, opts)
	w.Entity.Partitions = ecsttest.Partitions
	cl, err := kgo.NewClient(w.Kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	Align(t, adm, w.Entity)
	return &system{World: w, adm: adm, o: status.Options{DB: w.Pool, Admin: adm, Config: w.Config}}
}

// Align sets the entity's topic configs to what ecst.yaml wants, as `ecst
// topics apply --fix` does.
func Align(t *testing.T, adm *kadm.Client, e *config.Entity) {
	t.Helper()
	ctx := context.Background()
	changes, err := topics.Plan(ctx, adm, []*config.Entity{e})
	if err != nil {
		t.Fatal(err)
	}
	if err := topics.Fix(ctx, adm, changes); err != nil {
		t.Fatal(err)
	}
}

func (s *system) gather() *status.Snapshot {
	s.T.Helper()
	snap, err := status.Gather(context.Background(), s.o)
	if err != nil {
		s.T.Fatal(err)
	}
	// Every snapshot writes as text and JSON.
	var b bytes.Buffer
	if err := snap.WriteText(&b); err != nil {
		s.T.Fatal(err)
	}
	if _, err := json.Marshal(snap); err != nil {
		s.T.Fatal(err)
	}
	return snap
}

// waitFor gathers snapshots until ok says one is it.
func (s *system) waitFor(what string, ok func(*status.Snapshot) bool) *status.Snapshot {
	s.T.Helper()
	var last *status.Snapshot
	err := wait.Until(context.Background(), 30*time.Second, 20*time.Millisecond, what, func() (bool, error) {
		snap, err := status.Gather(context.Background(), s.o)
		if err != nil {
			return false, err
		}
		last = snap
		return ok(snap), nil
	})
	if err != nil {
		s.T.Fatalf("%v; last snapshot:\n%s", err, text(last))
	}
	return last
}

func text(s *status.Snapshot) string {
	if s == nil {
		return "(none)"
	}
	var b bytes.Buffer
	_ = s.WriteText(&b)
	return b.String()
}

// attention is the snapshot's findings, one line each.
func attention(s *status.Snapshot) []string {
	var out []string
	for _, f := range s.Attention {
		out = append(out, fmt.Sprintf("%s|%s|%s|%s", f.Severity, f.Subject, f.Message, f.Fix))
	}
	return out
}

// wantAttention checks the findings, each given as
// "severity|subject|message prefix|fix" (fields left off are not checked).
func wantAttention(t *testing.T, s *status.Snapshot, want ...string) {
	t.Helper()
	ok := len(s.Attention) == len(want)
	for i := 0; ok && i < len(want); i++ {
		f, w := s.Attention[i], strings.SplitN(want[i], "|", 4)
		got := []string{string(f.Severity), f.Subject, f.Message, f.Fix}
		for j, part := range w {
			ok = ok && (got[j] == part || j == 2 && strings.HasPrefix(got[j], part))
		}
	}
	if !ok {
		t.Fatalf("attention:\n  %s\nwant:\n  %s\nsnapshot:\n%s", strings.Join(attention(s), "\n  "), strings.Join(want, "\n  "), text(s))
	}
}

func drained(s *status.Snapshot) bool {
	for _, sh := range s.Shards {
		if sh.Pending > 0 {
			return false
		}
	}
	return true
}

// TestHealthyAndReadModels: a system in order needs no attention; a mirror
// behind its topic is not ready, needs attention once idle past
// --max-backlog-age, and is at tombstone risk once idle past the topic's
// delete.retention.ms.
func TestHealthyAndReadModels(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	ctx := context.Background()

	snap := s.gather()
	wantAttention(t, snap, "warning|relay|no relay leads outbox shard 0: rows written now will wait|ecst relay")

	stop := s.StartRelay()
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	s.WaitRelayLeads()
	s.Seed(ctx, ecsttest.Keys(10))
	s.waitFor("the outbox to drain", drained)
	if err := s.MirrorCatchUp("billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Run(ctx, verify.Config{Pool: s.Pool, Registry: s.Registry, Entity: s.Entity, Kafka: s.Kafka()}, verify.Options{Mirror: "billing"}); err != nil {
		t.Fatal(err)
	}
	snap = s.gather()
	wantAttention(t, snap)
	e := snap.Entity("customer")
	if !e.Exists || e.Partitions != ecsttest.Partitions || e.EndOffsets < 10 || e.Compaction["cleanup.policy"] != "compact" ||
		e.Compaction["delete.retention.ms"] != "604800000" || len(e.Drift) != 0 {
		t.Fatalf("entity %+v", e)
	}
	if v := e.LastVerify; v == nil || v.Result != verify.ResultInSync || v.Mirror != "billing" || v.Report.SourceKeys != 10 {
		t.Fatalf("last verify %+v", v)
	}
	if len(snap.Shards) != 1 || !snap.Shards[0].Leader || snap.Shards[0].Pending != 0 {
		t.Fatalf("shards %+v", snap.Shards)
	}
	if len(snap.ReadModels) != 1 {
		t.Fatalf("read models %+v", snap.ReadModels)
	}
	if m := snap.ReadModels[0]; m.Consumer != "mirror:billing" || m.Mirror != "billing" || m.Entity != "customer" || m.Topic != s.Topic || m.Lag != 0 || !m.Ready {
		t.Fatalf("read model %+v", m)
	}

	// Three more states published; the mirror has not read them.
	s.Seed(ctx, ecsttest.Keys(3))
	snap = s.waitFor("the outbox to drain", drained)
	lag := snap.ReadModels[0].Lag // records and transaction markers
	if m := snap.ReadModels[0]; m.Lag < 3 || m.Ready || m.TombstoneRisk {
		t.Fatalf("lagging read model %+v", m)
	}
	wantAttention(t, snap) // it committed a moment ago: catching up, say

	s.Exec(`UPDATE ecst.consumer_offsets SET updated_at = now() - interval '2 minutes'`)
	wantAttention(t, s.gather(), fmt.Sprintf("warning|consumer mirror:billing|%d offsets behind on ", lag)+s.Topic+" and no commit for 2m|ecst mirror customer --table billing")

	s.Exec(`UPDATE ecst.consumer_offsets SET updated_at = now() - interval '8 days'`)
	snap = s.gather()
	if !snap.ReadModels[0].TombstoneRisk {
		t.Fatalf("read model %+v", snap.ReadModels[0])
	}
	wantAttention(t, snap, fmt.Sprintf("critical|consumer mirror:billing|%d offsets behind on ", lag)+s.Topic+" and idle for 192h0m0s, longer than the topic's delete.retention.ms|ecst rebuild mirror:billing")

	if err := s.MirrorCatchUp("billing"); err != nil {
		t.Fatal(err)
	}
	wantAttention(t, s.gather())
}

// TestOutboxStates: rows no relay leads; a count capped at
// Options.PendingCap; a backlog behind a leader that publishes nothing.
func TestOutboxStates(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	ctx := context.Background()
	s.Seed(ctx, ecsttest.Keys(4))

	snap := s.gather()
	if sh := snap.Shards[0]; sh.Leader || sh.Pending != 4 || sh.Capped || sh.OldestAge.Duration() <= 0 {
		t.Fatalf("shard %+v", sh)
	}
	wantAttention(t, snap, "critical|relay|no relay leads outbox shard 0: 4 pending rows wait|ecst relay")

	s.o.PendingCap = 3
	snap = s.gather()
	if sh := snap.Shards[0]; sh.Pending != 3 || !sh.Capped || sh.PendingText() != "≥ 3" {
		t.Fatalf("capped shard %+v", sh)
	}
	wantAttention(t, snap, "critical|relay|no relay leads outbox shard 0: ≥ 3 pending rows wait|ecst relay")
	s.o.PendingCap = 0

	// A leader that publishes nothing (hung, say): it holds the shard's
	// lock, and the rows age.
	conn, err := pgxpool.New(ctx, s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := conn.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, pglock.ECST, pglock.ObjRelayShard); err != nil {
		t.Fatal(err)
	}
	wantAttention(t, s.gather()) // young rows, led: on their way
	s.Exec(`UPDATE ecst.outbox SET created_at = now() - interval '5 minutes'`)
	snap = s.gather()
	if sh := snap.Shards[0]; !sh.Leader || sh.OldestAge.Duration() < 5*time.Minute {
		t.Fatalf("shard %+v", sh)
	}
	wantAttention(t, snap, "critical|outbox shard 0|the oldest of 4 pending rows has waited 5m")
	s.o.MaxBacklogAge = time.Hour
	wantAttention(t, s.gather())
}

// TestVerifyAndRepublishStates: drift found by the last verify; a
// republish run under way with progress and ETA; a failed run and one
// abandoned by its process.
func TestVerifyAndRepublishStates(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	ctx := context.Background()
	stop := s.StartRelay()
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	s.WaitRelayLeads()
	s.Seed(ctx, ecsttest.Keys(20))
	s.waitFor("the outbox to drain", drained)

	s.Exec(`UPDATE customers SET name = 'renamed' WHERE id = 'c00003'`)
	if _, err := verify.Run(ctx, verify.Config{Pool: s.Pool, Registry: s.Registry, Entity: s.Entity, Kafka: s.Kafka()}, verify.Options{}); err != nil {
		t.Fatal(err)
	}
	snap := s.gather()
	if v := snap.Entity("customer").LastVerify; v == nil || v.Result != verify.ResultDrift || v.Report.Stale != 1 {
		t.Fatalf("last verify %+v", v)
	}
	wantAttention(t, snap, "critical|entity customer|the last verify ("+snap.Entity("customer").LastVerify.FinishedAt.Format(time.RFC3339)+") found drift: topic: 0 missing, 0 extra, 1 stale|ecst verify customer --repair")

	// A paced run of every key: watch it under way, then stop it.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := republish.Run(runCtx, republish.Config{Pool: s.Pool, Publisher: s.Pub, Entity: s.Entity}, republish.Options{All: true, Batch: 2, Rate: 10})
		done <- err
	}()
	snap = s.waitFor("a run under way with an ETA", func(snap *status.Snapshot) bool {
		return len(snap.Republish) == 1 && snap.Republish[0].State == "running" && snap.Republish[0].ETA > 0
	})
	r := snap.Republish[0]
	// The ETA is what is left at the rate so far.
	rate := float64(r.Written) / r.UpdatedAt.Sub(r.StartedAt).Seconds()
	if eta := float64(20-r.Written) / rate; *r.Selected != 20 || r.Written == 0 || r.Progress != float64(r.Written)/20 || math.Abs(float64(r.ETA)-eta) > 0.001*eta {
		t.Fatalf("run %+v, want an ETA of %.3fs", r, eta)
	}
	if !strings.Contains(r.ProgressText(), "/20 (") || !strings.Contains(r.ProgressText(), "ETA") {
		t.Fatalf("progress %q", r.ProgressText())
	}
	cancel()
	<-done
	snap = s.gather()
	if got := snap.Republish[0].State; got != "cancelled" {
		t.Fatalf("run state %s", got)
	}

	// Repair the drifted key, as the finding says; a new verify replaces
	// the drift.
	if _, err := republish.Run(ctx, republish.Config{Pool: s.Pool, Publisher: s.Pub, Entity: s.Entity}, republish.Options{Keys: []string{"c00003"}}); err != nil {
		t.Fatal(err)
	}
	s.waitFor("the outbox to drain", drained)
	if _, err := verify.Run(ctx, verify.Config{Pool: s.Pool, Registry: s.Registry, Entity: s.Entity, Kafka: s.Kafka()}, verify.Options{}); err != nil {
		t.Fatal(err)
	}
	snap = s.gather()
	if r := snap.Republish[0]; r.State != "completed" || r.Progress != 1 || r.ETA != 0 {
		t.Fatalf("run %+v", r)
	}
	wantAttention(t, snap)

	s.Exec(`INSERT INTO ecst.republish_runs (entity, selection, state, rows_written, error) VALUES ('customer', '{}', 'failed', 7, 'broker gone')`)
	snap = s.gather()
	id := snap.Republish[0].ID
	want := []string{fmt.Sprintf("critical|republish run %d|the latest republish run of customer failed after writing 7 rows: broker gone|ecst republish customer --resume %d", id, id)}
	wantAttention(t, snap, want...)

	s.Exec(`INSERT INTO ecst.republish_runs (entity, selection, state, rows_written) VALUES ('customer', '{}', 'running', 2)`)
	snap = s.gather()
	id = snap.Republish[0].ID
	if snap.Republish[0].State != "abandoned" {
		t.Fatalf("run %+v", snap.Republish[0])
	}
	want[0] = fmt.Sprintf("critical|republish run %d|the latest republish run of customer abandoned after writing 2 rows: its process stopped without finishing|ecst republish customer --resume %d", id, id)
	wantAttention(t, snap, want...)
}

// TestMissingAndDriftedTopic: a topic that is not there, and one whose
// configs differ from ecst.yaml.
func TestMissingAndDriftedTopic(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.Entity.TopicConfig = map[string]string{"segment.ms": "3600000"}
	wantAttention(t, s.gather(),
		`warning|relay`,
		`warning|entity customer|topic `+s.Topic+`: segment.ms is "86400000", ecst.yaml wants "3600000"|ecst topics apply --fix`)
	s.Entity.Topic = "no-such-topic-" + s.Topic
	snap := s.gather()
	if e := snap.Entity("customer"); e.Exists || e.Partitions != 0 {
		t.Fatalf("entity %+v", e)
	}
	wantAttention(t, snap, `critical|entity customer|topic no-such-topic-`+s.Topic+` does not exist: the relay cannot publish customer|ecst topics apply`, `warning|relay`)
}

// TestCapture: an entity with capture shows its tables and the markers
// waiting for the relay; a trigger dropped by hand needs attention, with
// the command that reinstalls it. Without capture the section is absent.
func TestCapture(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newSystem(t)
	if snap := s.gather(); len(snap.Capture) != 0 || strings.Contains(text(snap), "CAPTURE") {
		t.Fatalf("capture shown with none installed: %+v", snap.Capture)
	}
	if _, err := capture.Enable(ctx, s.Pool, s.Entity, false); err != nil {
		t.Fatal(err)
	}
	s.Exec(`SELECT ecst.publish('customer', ARRAY['c1', 'c2'])`)
	s.Exec(`SELECT ecst.publish('customer', 'c3')`)
	snap := s.gather()
	if len(snap.Capture) != 1 || !snap.Capture[0].Enabled || snap.Capture[0].Pending != 2 || len(snap.Capture[0].Tables) != 1 {
		t.Fatalf("capture %+v; want customer enabled on one table, 2 markers pending", snap.Capture)
	}
	if txt := text(snap); !strings.Contains(txt, "CAPTURE") || !strings.Contains(txt, "all present") {
		t.Fatalf("text:\n%s", txt)
	}
	wantAttention(t, snap, `critical|relay|no relay leads outbox shard 0`)

	trigger := snap.Capture[0].Tables[0].Triggers[0]
	s.Exec(`DROP TRIGGER ` + trigger + ` ON customers`)
	wantAttention(t, s.gather(), `critical|relay|no relay leads outbox shard 0`, `warning|capture of customer|a capture trigger or function is missing|ecst capture enable customer`)
}
