package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A table relay's position in its outbox shard. docs/architecture.md ("Why
// per-key order holds", "The relay") has the argument in full; in short:
//
// Invariant: every committed row of the shard with id <= at is published,
// unless its transaction is watched (x in some [lo, hi)) and its id is above
// that range's low mark. A read sees one snapshot S and takes, in id order,
// the visible rows past at and the visible rows of watched transactions up
// to at. A row with an id at most the new cursor that S cannot see belongs
// to a transaction in progress at S: one in S's xip list, or one with an
// xid at or above S's xmax (in progress, yet not in xip), or one that has no
// xid yet (it drew the id first; its xid, when it gets one, is above xmax).
// The new watched set covers all three: xip, and every xid from xmax up (the
// tail, with low mark 0). A transaction stays watched while it runs; once
// ended, its rows are visible and read, and it is dropped.
//
// No published row is read again: a watched transaction's rows at most its
// low mark were either never visible (low 0: never read) or taken by an
// earlier read (the mark moved past them).

// maxXid bounds the open range of transaction ids at or above a snapshot's
// xmax: no transaction ever gets it.
const maxXid = math.MaxUint64

// xrange is a run of transaction ids [lo, hi) that the relay watches: their
// rows with an id above low are not published yet.
type xrange struct {
	lo, hi uint64
	low    int64
}

// cursor is a shard's position: see the invariant above.
type cursor struct {
	at      int64
	watched []xrange // sorted by lo, disjoint
}

// snapshot is what a read needs of its MVCC snapshot: the transactions in
// progress are those in xip and every id at or above xmax.
type snapshot struct {
	xmax uint64
	xip  []uint64 // sorted, each below xmax
}

func (s snapshot) inProgress(x uint64) bool {
	if x >= s.xmax {
		return true
	}
	_, found := slices.BinarySearch(s.xip, x)
	return found
}

// watchMode says what a cursor watches. Anything but watchAll is a test
// hook that removes a mechanism, so that a test can show what it prevents.
type watchMode int

const (
	// watchAll watches every transaction in progress at the read.
	watchAll watchMode = iota
	// watchXip watches only the snapshot's xip list: it misses transactions
	// at or above xmax, and those that drew an id before they had an xid.
	watchXip
	// watchNone keeps no watched set: the plain `id > cursor` read.
	watchNone
)

// advance returns the cursor after a read from c at snapshot s. taken are
// the ids of the rows the batch took, in increasing order: a prefix of what
// the read returned, which was every visible row past c.at or of a watched
// transaction, in id order, unless cut: the read hit its row limit or the
// batch its byte cap after the last taken row.
func (c cursor) advance(s snapshot, taken []int64, cut bool, mode watchMode) cursor {
	next := cursor{at: c.at}
	last := int64(math.MaxInt64) // every visible row was read
	if n := len(taken); n > 0 {
		next.at = max(next.at, taken[n-1])
		if cut {
			last = taken[n-1]
		}
	}
	if mode == watchNone {
		return next
	}
	var out []xrange
	add := func(lo, hi uint64, low int64) {
		if lo < hi {
			out = append(out, xrange{lo, hi, low})
		}
	}
	for _, w := range c.watched {
		split(w.lo, w.hi, s, func(lo, hi uint64, inProgress bool) {
			switch {
			case inProgress:
				// Nothing of them was visible: nothing taken.
				add(lo, hi, w.low)
			case last != math.MaxInt64:
				// Ended: their rows up to last were taken; those between
				// last and c.at are read next time, those past c.at are
				// past the cursor.
				if low := max(w.low, last); low < c.at {
					add(lo, hi, low)
				}
			}
			// Ended and every visible row read: done with them.
		})
	}
	// Whatever is in progress at s and not watched yet: it may hold ids at
	// most next.at. None of its rows was ever visible, so all are unread.
	for _, x := range s.xip {
		if !covered(c.watched, x) {
			add(x, x+1, 0)
		}
	}
	lo := s.xmax
	if mode == watchXip {
		lo = maxXid
	}
	for _, w := range c.watched {
		if w.hi <= lo {
			continue
		}
		add(lo, w.lo, 0)
		lo = max(lo, w.hi)
	}
	add(lo, maxXid, 0)
	next.watched = merge(out)
	return next
}

// split calls f for the pieces of [lo, hi) that are, in turn, ended or in
// progress at s.
func split(lo, hi uint64, s snapshot, f func(lo, hi uint64, inProgress bool)) {
	end := min(hi, s.xmax)
	if lo < end {
		for i := sort.Search(len(s.xip), func(i int) bool { return s.xip[i] >= lo }); i < len(s.xip) && s.xip[i] < end; i++ {
			x := s.xip[i]
			if lo < x {
				f(lo, x, false)
			}
			f(x, x+1, true)
			lo = x + 1
		}
		if lo < end {
			f(lo, end, false)
		}
	}
	if lo = max(lo, s.xmax); lo < hi {
		f(lo, hi, true)
	}
}

func covered(ws []xrange, x uint64) bool {
	i := sort.Search(len(ws), func(i int) bool { return ws[i].hi > x })
	return i < len(ws) && ws[i].lo <= x
}

// merge sorts ranges and joins neighbours with the same low mark.
func merge(ws []xrange) []xrange {
	slices.SortFunc(ws, func(a, b xrange) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := ws[:0]
	for _, w := range ws {
		if n := len(out); n > 0 && out[n-1].hi == w.lo && out[n-1].low == w.low {
			out[n-1].hi = w.hi
			continue
		}
		out = append(out, w)
	}
	return out
}

// arrays returns the watched ranges as the three arrays the queries take.
func (c cursor) arrays() (lo, hi []uint64, low []int64) {
	lo, hi, low = make([]uint64, len(c.watched)), make([]uint64, len(c.watched)), make([]int64, len(c.watched))
	for i, w := range c.watched {
		lo[i], hi[i], low[i] = w.lo, w.hi, w.low
	}
	return lo, hi, low
}

// loadCursor reads a shard's persisted cursor; a shard with none starts at
// the beginning.
func loadCursor(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, shard int16) (cursor, error) {
	var c cursor
	var lo, hi []uint64
	var low []int64
	err := q.QueryRow(ctx, `SELECT cursor, watched_lo, watched_hi, watched_low FROM ecst.relay_cursors WHERE shard = $1`, shard).Scan(&c.at, &lo, &hi, &low)
	if errors.Is(err, pgx.ErrNoRows) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("read the relay cursor of shard %d: %w", shard, err)
	}
	if len(lo) != len(hi) || len(lo) != len(low) {
		return cursor{}, fmt.Errorf("the relay cursor of shard %d is damaged (watched arrays of %d, %d and %d entries)", shard, len(lo), len(hi), len(low))
	}
	for i := range lo {
		c.watched = append(c.watched, xrange{lo[i], hi[i], low[i]})
	}
	return c, nil
}

const saveCursorSQL = `INSERT INTO ecst.relay_cursors AS c (shard, cursor, watched_lo, watched_hi, watched_low)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (shard) DO UPDATE SET cursor = $2, watched_lo = $3, watched_hi = $4, watched_low = $5, updated_at = now()`

// saveCursor persists a shard's cursor through the leader's lock session, so
// that only the leader of the moment writes it: a leader that lost its
// lease cannot move the cursor under its successor's feet.
func (l *lease) saveCursor(ctx context.Context, shard int16, c cursor) error {
	lo, hi, low := c.arrays()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.conn.Exec(ctx, saveCursorSQL, shard, c.at, lo, hi, low); err != nil {
		if _, ok := errors.AsType[*pgconn.PgError](err); ok {
			return fmt.Errorf("save the relay cursor of shard %d: %w", shard, err)
		}
		return fmt.Errorf("%w: save the relay cursor of shard %d: %v", errLeaseLost, shard, err)
	}
	return nil
}
