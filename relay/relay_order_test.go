package relay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/outbox"
	"github.com/ecst-io/ecst/producer"
)

// topicOrderRun has writers publish a handful of keys concurrently, with no
// row lock, each transaction recording its commit position last (a counter
// row whose lock it holds until commit). After the relay drains, it counts
// the keys whose last record on the topic is not the state of the key's
// last commit.
func topicOrderRun(t *testing.T, keyLock bool, seed uint64) (wrong, keys int) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, envOpts{})
	if _, err := e.pool.Exec(ctx, `CREATE TABLE commit_seq (n bigint NOT NULL); INSERT INTO commit_seq VALUES (0);
		CREATE TABLE commits (seq bigint PRIMARY KEY, key text NOT NULL, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const writers, perWriter, nkeys = 12, 25, 2
	testkit.Parallel(t, writers, func(w int) error {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		for i := range perWriter {
			key := fmt.Sprintf("k%d", rng.IntN(nkeys))
			version := int64(w*1000 + i)
			pause := time.Duration(rng.IntN(1500)) * time.Microsecond
			err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				row := outbox.Row{Topic: e.topic, Key: key, Value: []byte("v"),
					Headers: []outbox.Header{{Key: producer.HeaderEntityVersion, Value: []byte(strconv.FormatInt(version, 10))}}}
				var err error
				if keyLock {
					err = outbox.Insert(ctx, tx, row)
				} else {
					_, err = tx.Exec(ctx, "INSERT INTO ecst.outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)",
						row.Topic, row.Key, row.Value, outbox.EncodeHeaders(row.Headers))
				}
				if err != nil {
					return err
				}
				time.Sleep(pause)
				var seq int64
				if err := tx.QueryRow(ctx, "UPDATE commit_seq SET n = n + 1 RETURNING n").Scan(&seq); err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "INSERT INTO commits VALUES ($1, $2, $3)", seq, key, version)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	e.drain()
	last := map[string]string{}
	for _, r := range e.readTopic() {
		last[r.key] = r.headers[producer.HeaderEntityVersion]
	}
	rows, err := e.pool.Query(ctx, "SELECT DISTINCT ON (key) key, version FROM commits ORDER BY key, seq DESC")
	if err != nil {
		t.Fatal(err)
	}
	var k string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		keys++
		if last[k] != strconv.FormatInt(v, 10) {
			wrong++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return wrong, keys
}

func TestTopicEndsOnLastCommit(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if wrong, keys := topicOrderRun(t, true, seed); wrong > 0 {
		t.Fatalf("seed %d: %d of %d keys end on a state that is not their last commit", seed, wrong, keys)
	}
}

// TestTopicOrderNeedsTheKeyLock: the same run without the per-key lock lets
// ids disagree with commit order, and the relay, publishing in id order,
// leaves keys on an older state.
func TestTopicOrderNeedsTheKeyLock(t *testing.T) {
	t.Parallel()
	// Only a key's last state counts here, so one run shows the reordering
	// about half the time: 25 runs make a miss a one-in-a-million event.
	for attempt := range 25 {
		if wrong, keys := topicOrderRun(t, false, uint64(attempt)); wrong > 0 {
			t.Logf("attempt %d: without the key lock, %d of %d keys end on a stale state", attempt, wrong, keys)
			return
		}
	}
	t.Fatal("25 runs without the key lock left every key on its last commit: the check cannot see a missing lock")
}
