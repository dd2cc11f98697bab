package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/relay"
)

// idBeforeXidScenario stages a transaction that draws an outbox id before
// it has a transaction id (nextval does not need one; the row's txid is
// filled in when the row is written): the relay reads past that id while
// the transaction has no xid, so no snapshot lists it as in progress. The
// relay then stops, the row is written and committed, and a drain runs
// from the cursor the relay saved. It reports whether the row reached the
// topic.
func idBeforeXidScenario(t *testing.T, xipOnly bool) (published bool) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	late, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(context.Background()) //nolint:errcheck
	var id int64
	var xid *uint64
	for range 10 {
		if err := late.QueryRow(ctx, `SELECT nextval('ecst.outbox_id_seq'), pg_current_xact_id_if_assigned()`).Scan(&id, &xid); err != nil {
			t.Fatal(err)
		}
		if xid == nil {
			break
		}
		// nextval took an xid to log the sequence: draw another
		// transaction's id.
		_ = late.Rollback(ctx)
		if late, err = e.pool.Begin(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if xid != nil {
		t.Fatal("every nextval took an xid")
	}
	for i := range 5 {
		if _, err := e.write(ctx, fmt.Sprintf("other%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.relayConfig()
	if xipOnly {
		relay.WithXipOnly(&cfg)
	}
	stop := e.runRelay(cfg)
	wait.Eventually(t, 30*time.Second, "the relay to publish the other rows", func() bool { return e.outboxCount() == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var at int64
	if err := e.pool.QueryRow(ctx, `SELECT cursor FROM ecst.relay_cursors WHERE shard = 0`).Scan(&at); err != nil || at <= id {
		t.Fatalf("the saved cursor is %d (err %v), not past the late row's id %d: the scenario did not happen", at, err, id)
	}
	if _, err := late.Exec(ctx, `INSERT INTO ecst.outbox (id, topic, key, value, headers) OVERRIDING SYSTEM VALUE VALUES ($1, $2, 'late', '\x00', $3)`,
		id, e.topic, outbox.EncodeHeaders(nil)); err != nil {
		t.Fatal(err)
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cfg = e.relayConfig()
	cfg.Drain = true
	if xipOnly {
		relay.WithXipOnly(&cfg)
	}
	if err := runOnce(t, cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.readTopic() {
		if r.key == "late" {
			return true
		}
	}
	return false
}

// TestIDBeforeXidIsPublished: a row whose id was drawn before its
// transaction had an xid, and which committed below the cursor, is
// published: the relay watches every xid from its snapshot's xmax up, and
// the transaction's xid, drawn after the read, is among them.
func TestIDBeforeXidIsPublished(t *testing.T) {
	t.Parallel()
	if !idBeforeXidScenario(t, false) {
		t.Fatal("the row committed below the cursor never reached the topic")
	}
}

// TestXipOnlyLosesIDBeforeXid: the same with a relay that watches only its
// snapshots' xip lists loses the row: the test can see the mechanism go.
func TestXipOnlyLosesIDBeforeXid(t *testing.T) {
	t.Parallel()
	if idBeforeXidScenario(t, true) {
		t.Fatal("the row reached the topic with only the xip lists watched: the scenario cannot tell")
	}
}
