package consumer_test

import (
	"testing"
	"time"

	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/internal/wait"
)

// TestPartitionedPostgres: two instances in one group share one Postgres
// model, each applying its own partitions; when one stops, the other takes
// its partitions over from the stored offsets.
func TestPartitionedPostgres(t *testing.T) {
	t.Parallel()
	w, m := stores[1].worldWith(t, 21, 600, 120)
	a, b := w.consumer(t, m, "shared", w.inGroup), w.consumer(t, m, "shared", w.inGroup)
	stopA := start(t, a)
	start(t, b)
	waitReady(t, a)
	waitReady(t, b)
	wait.Eventually(t, time.Minute, "the shared model to hold every key", func() bool { return matches(w, m.snapshot()) })
	w.assertModel(t, m)
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	w.history(22, 400, 120) // B must now apply every partition
	w.write(w.upsert("last", 1))
	wait.Eventually(t, time.Minute, "b to take over a's partitions", func() bool { return matches(w, m.snapshot()) })
	w.assertModel(t, m)
}

// TestPartitionedMemory: two memory models in one group each hold the keys
// of their own partitions, none twice; together they are the whole model.
func TestPartitionedMemory(t *testing.T) {
	t.Parallel()
	w, ma := stores[0].worldWith(t, 23, 600, 120)
	mb := stores[0].make(t, w)
	a, b := w.consumer(t, ma, "mem", w.inGroup), w.consumer(t, mb, "mem", w.inGroup)
	stopA := start(t, a)
	waitReady(t, a)
	start(t, b)
	waitReady(t, b)
	union := func() (map[string]map[string]any, int) {
		sa, sb := ma.snapshot(), mb.snapshot()
		overlap := 0
		u := map[string]map[string]any{}
		for k, v := range sa {
			u[k] = v
		}
		for k, v := range sb {
			if _, ok := u[k]; ok {
				overlap++
			}
			u[k] = v
		}
		return u, overlap
	}
	wait.Eventually(t, time.Minute, "the two models to split the keys", func() bool {
		u, overlap := union()
		return overlap == 0 && matches(w, u) && len(ma.snapshot()) > 0 && len(mb.snapshot()) > 0
	})
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	w.write(w.upsert("last", 1))
	wait.Eventually(t, time.Minute, "b to hold every key at its latest state", func() bool { return matches(w, mb.snapshot()) })
	w.assertModel(t, mb)
}

// inGroup puts a consumer in the world's consumer group.
func (w *world) inGroup(c *consumer.Config[map[string]any]) { c.Group = "g-" + w.topic }

// matches reports whether a snapshot is the latest state of every key.
func matches(w *world, got map[string]map[string]any) bool {
	if len(got) != liveKeys(w) {
		return false
	}
	for k, s := range w.expected {
		if s == nil {
			continue
		}
		if g, ok := got[k]; !ok || g["version"] != s["version"] {
			return false
		}
	}
	return true
}

func liveKeys(w *world) int {
	n := 0
	for _, s := range w.expected {
		if s != nil {
			n++
		}
	}
	return n
}
