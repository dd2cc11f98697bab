package relay

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestAdvance(t *testing.T) {
	t.Parallel()
	tail := func(lo uint64) xrange { return xrange{lo, maxXid, 0} }
	cases := []struct {
		name  string
		from  cursor
		snap  snapshot
		taken []int64
		cut   bool
		want  cursor
	}{{
		name:  "first read: everything in progress is watched",
		snap:  snapshot{xmax: 100, xip: []uint64{90, 95}},
		taken: []int64{1, 2, 5},
		want:  cursor{at: 5, watched: []xrange{{90, 91, 0}, {95, 96, 0}, tail(100)}},
	}, {
		name: "ended transactions go, running ones and the new tail stay",
		from: cursor{at: 5, watched: []xrange{{90, 91, 0}, {95, 96, 0}, tail(100)}},
		snap: snapshot{xmax: 110, xip: []uint64{95, 105}},
		want: cursor{at: 5, watched: []xrange{{95, 96, 0}, {105, 106, 0}, tail(110)}},
	}, {
		name:  "a cut among watched rows keeps the ended ones from the last row taken",
		from:  cursor{at: 10, watched: []xrange{{50, 51, 0}, tail(60)}},
		snap:  snapshot{xmax: 70, xip: []uint64{65}},
		taken: []int64{3, 4},
		cut:   true,
		want:  cursor{at: 10, watched: []xrange{{50, 51, 4}, {60, 65, 4}, {65, 66, 0}, {66, 70, 4}, tail(70)}},
	}, {
		name:  "a cut past the cursor leaves nothing of the ended ones",
		from:  cursor{at: 10, watched: []xrange{{50, 51, 0}, tail(60)}},
		snap:  snapshot{xmax: 70},
		taken: []int64{3, 12},
		cut:   true,
		want:  cursor{at: 12, watched: []xrange{tail(70)}},
	}, {
		name: "a snapshot behind the tail keeps it",
		from: cursor{at: 10, watched: []xrange{tail(60)}},
		snap: snapshot{xmax: 60},
		want: cursor{at: 10, watched: []xrange{tail(60)}},
	}}
	for _, c := range cases {
		got := c.from.advance(c.snap, c.taken, c.cut, watchAll)
		if got.at != c.want.at || !slices.Equal(got.watched, c.want.watched) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
	if got := (cursor{at: 3, watched: []xrange{tail(5)}}).advance(snapshot{xmax: 9, xip: []uint64{7}}, []int64{4}, false, watchNone); got.at != 4 || got.watched != nil {
		t.Errorf("without the watched set: %+v", got)
	}
}

// TestCursorSimulation runs the cursor against a model of PostgreSQL's
// MVCC: transactions draw outbox ids, get their xids (before or after their
// first id: a business write first, or the insert's own), and commit or
// roll back in random order, while a relay reads with small limits and
// random byte cuts. It checks what the relay's guarantees rest on: every
// committed row is published once and only once, and after a read every
// row its snapshot saw with an id at most the last one taken is published
// (so when a row of key K is published, every earlier row of K, committed
// before it under the key lock, is published too). Without the watched
// set, or watching only the snapshot's xip list, it must go wrong.
func TestCursorSimulation(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		if err := simulate(seed, watchAll); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
	for _, v := range []struct {
		name string
		mode watchMode
	}{{"no watched set", watchNone}, {"only the snapshot's xip watched", watchXip}} {
		failed := 0
		for seed := range uint64(300) {
			if simulate(seed, v.mode) != nil {
				failed++
			}
		}
		if failed == 0 {
			t.Errorf("with %s, 300 runs lost nothing: the simulation cannot see the mechanism", v.name)
		}
		t.Logf("with %s, %d of 300 runs went wrong", v.name, failed)
	}
}

// sim is the model: transactions, their outbox ids, and a relay's cursor.
type sim struct {
	rng             *rand.Rand
	mode            watchMode
	nextXid         uint64
	nextID          int64
	latestCompleted uint64
	txs             []*simTx
	byXid           map[uint64]*simTx
	published       map[int64]bool
	cur             cursor
}

type simTx struct {
	xid     uint64 // 0 until assigned
	ids     []int64
	ended   bool
	aborted bool
}

func (m *sim) assign(tx *simTx) {
	if tx.xid == 0 {
		tx.xid = m.nextXid
		m.byXid[tx.xid] = tx
		m.nextXid++
	}
}

func (m *sim) end(tx *simTx, abort bool) {
	if len(tx.ids) > 0 {
		m.assign(tx) // writing the row gave it an xid at the latest
	}
	tx.ended, tx.aborted = true, abort
	if tx.xid != 0 {
		m.latestCompleted = max(m.latestCompleted, tx.xid)
	}
}

// snapshot is GetSnapshotData: xmax is one past the latest completed xid,
// and xip lists the running xids below it.
func (m *sim) snapshot() snapshot {
	s := snapshot{xmax: m.latestCompleted + 1}
	for _, tx := range m.txs {
		if tx.xid != 0 && !tx.ended && tx.xid < s.xmax {
			s.xip = append(s.xip, tx.xid)
		}
	}
	slices.Sort(s.xip)
	return s
}

// visible lists the ids of rows committed as s sees them.
func (m *sim) visible(s snapshot) []int64 {
	var ids []int64
	for _, tx := range m.txs {
		if tx.xid != 0 && tx.ended && !tx.aborted && !s.inProgress(tx.xid) {
			ids = append(ids, tx.ids...)
		}
	}
	return ids
}

// read is one relay read of at most limit rows, as readSQL returns them,
// taken whole or cut short (the byte cap), then checked.
func (m *sim) read(limit int) error {
	s := m.snapshot()
	var rows []int64
	for _, tx := range m.txs {
		if tx.xid == 0 || !tx.ended || tx.aborted || s.inProgress(tx.xid) {
			continue
		}
		for _, id := range tx.ids {
			if id > m.cur.at || slices.ContainsFunc(m.cur.watched, func(w xrange) bool { return tx.xid >= w.lo && tx.xid < w.hi && id > w.low }) {
				rows = append(rows, id)
			}
		}
	}
	slices.Sort(rows)
	rows = rows[:min(len(rows), limit)]
	taken := len(rows)
	if taken > 1 && m.rng.IntN(4) == 0 {
		taken = 1 + m.rng.IntN(taken)
	}
	for _, id := range rows[:taken] {
		if m.published[id] {
			return fmt.Errorf("row %d published twice (cursor %+v)", id, m.cur)
		}
		m.published[id] = true
	}
	m.cur = m.cur.advance(s, rows[:taken], taken < len(rows) || len(rows) >= limit, m.mode)
	if taken == 0 {
		return nil
	}
	last := rows[taken-1]
	for _, id := range m.visible(s) {
		if id <= last && !m.published[id] {
			return fmt.Errorf("row %d was visible and is below row %d, taken, but not published", id, last)
		}
	}
	return nil
}

// step does one random thing.
func (m *sim) step() error {
	if k := m.rng.IntN(10); k < 2 || len(m.txs) == 0 {
		tx := &simTx{}
		if m.rng.IntN(2) == 0 {
			m.assign(tx) // a business write before the outbox row
		}
		m.txs = append(m.txs, tx)
		return nil
	} else if k >= 7 {
		return m.read(1 + m.rng.IntN(4))
	} else if tx := m.txs[m.rng.IntN(len(m.txs))]; !tx.ended {
		switch {
		case k < 5:
			tx.ids = append(tx.ids, m.nextID)
			m.nextID++
		case k < 6 && len(tx.ids) > 0:
			// The identity default draws the id before the row gets its
			// txid: a transaction's first row can hold an id for a moment
			// before the transaction has an xid.
			m.assign(tx)
		case k == 6:
			m.end(tx, m.rng.IntN(8) == 0)
		}
	}
	return nil
}

func simulate(seed uint64, mode watchMode) error {
	m := &sim{rng: rand.New(rand.NewPCG(seed, 7)), mode: mode, nextXid: 100, nextID: 1, latestCompleted: 99,
		byXid: map[uint64]*simTx{}, published: map[int64]bool{}}
	for range 400 {
		if err := m.step(); err != nil {
			return err
		}
	}
	for _, tx := range m.txs {
		if !tx.ended {
			m.end(tx, false)
		}
	}
	for range 1000 {
		if err := m.read(5); err != nil {
			return err
		}
	}
	for _, tx := range m.txs {
		for _, id := range tx.ids {
			if !tx.aborted && !m.published[id] {
				return fmt.Errorf("committed row %d (xid %d) never published", id, tx.xid)
			}
		}
	}
	return nil
}
