package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// MarkerTopic is the reserved outbox topic of capture markers (migration
// 004, ecst.capture) in the table transport: a marker says which keys of an
// entity changed. The relay resolves markers through its Resolver and never
// produces one to Kafka.
const MarkerTopic = "_ecst.capture"

// MarkerPrefix is the prefix of the logical decoding messages that carry
// capture markers in the WAL transport. The WAL source turns them into
// records of MarkerTopic.
const MarkerPrefix = "ecst.capture"

// Marker is a capture marker met in the relay's stream: these keys of
// Entity changed in a transaction that has committed.
type Marker struct {
	// ID names the marker in the ecst-capture header of the events that
	// resolve it: its outbox row id, or in the WAL transport its WAL
	// position.
	ID string
	// Entity is the entity's name in ecst.yaml.
	Entity string
	// Keys are the entity keys that changed; empty with All.
	Keys []string
	// All says every key may have changed (a TRUNCATE).
	All bool
	// Unpublished are, with All in the WAL transport, the keys per topic
	// of the events the relay holds that are not yet on Kafka (ahead of
	// the marker, or beside it in its batch): a key the source no longer
	// has among them needs a tombstone. The table transport's resolver
	// reads them from the outbox.
	Unpublished map[string][]string
}

// Resolver turns capture markers into events (package capture implements
// it; `ecst relay` wires it in).
type Resolver interface {
	// Resolve writes, for every marker, the current state of its keys (a
	// tombstone for a key the source no longer has) into the outbox,
	// behind everything already there, under the keys' locks, and returns
	// once that is committed. The relay moves past the markers only then.
	// A marker it can never resolve is a *MarkerError; any other error is
	// retried.
	Resolve(ctx context.Context, markers []Marker) error
}

// MarkerError is a marker a Resolver can never resolve (an entity it does
// not know, say). The relay treats it as a record the broker refused for
// good: relay.on_reject halts or parks it.
type MarkerError struct {
	// Marker is the marker refused.
	Marker Marker
	// Err says why, and the fix.
	Err error
}

func (e *MarkerError) Error() string {
	return fmt.Sprintf("capture marker %s (entity %q): %v", e.Marker.ID, e.Marker.Entity, e.Err)
}

func (e *MarkerError) Unwrap() error { return e.Err }

// errNoResolver: a marker arrived at a relay built without a Resolver.
var errNoResolver = errors.New("a capture marker arrived, and this relay has no capture resolver: `ecst relay` resolves markers when schema_registry.url is set (it encodes the states); a relay.Config needs a Resolver (capture.NewResolver)")

// markerValue is a marker's JSON, as ecst.capture writes it.
type markerValue struct {
	Entity string   `json:"entity"`
	Keys   []string `json:"keys"`
	All    bool     `json:"all"`
}

func decodeMarker(rec record) (Marker, error) {
	var v markerValue
	if err := json.Unmarshal(rec.value, &v); err != nil {
		return Marker{}, fmt.Errorf("capture marker %s does not decode: %w", markerID(rec), err)
	}
	if v.Entity == "" {
		return Marker{}, fmt.Errorf("capture marker %s names no entity", markerID(rec))
	}
	return Marker{ID: markerID(rec), Entity: v.Entity, Keys: v.Keys, All: v.All}, nil
}

// markerID is the marker's outbox row id, or its WAL position.
func markerID(rec record) string {
	if rec.lsn != 0 {
		return rec.lsn.String()
	}
	return strconv.FormatInt(rec.id, 10)
}

func rejectMarker(rec record, err error) *RejectedError {
	return &RejectedError{ID: rec.id, LSN: rec.lsn, Topic: rec.topic, Key: rec.key, Err: err}
}

func isMarker(rec record) bool { return rec.topic == MarkerTopic }

// resolve resolves b's markers and takes them out of b. ok is false when b
// must be dropped and read again: the resolution failed (and was retried
// after a backoff) or rejected a marker (which halts the relay, or parks it).
func (t *termLoop) resolve(term context.Context, b *batch, bo *backoff) (ok bool, err error) {
	var markers []Marker
	var byID []record
	events := b.records[:0:0]
	var rejected []*RejectedError
	for _, rec := range b.records {
		if !isMarker(rec) {
			events = append(events, rec)
			continue
		}
		m, err := decodeMarker(rec)
		if err == nil && t.r.cfg.Resolver == nil {
			err = errNoResolver
		}
		if err != nil {
			rejected = append(rejected, rejectMarker(rec, err))
			continue
		}
		markers = append(markers, m)
		byID = append(byID, rec)
	}
	for i := range markers {
		if markers[i].All && t.unit.wal() {
			markers[i].Unpublished = unpublished(b.records)
		}
	}
	if len(markers) == 0 && len(rejected) == 0 {
		return true, nil
	}
	if len(rejected) == 0 {
		err := t.r.cfg.Resolver.Resolve(term, markers)
		var me *MarkerError
		switch {
		case errors.As(err, &me):
			for _, rec := range byID {
				if markerID(rec) == me.Marker.ID {
					rejected = append(rejected, rejectMarker(rec, me))
				}
			}
			if len(rejected) == 0 {
				return false, fmt.Errorf("the capture resolver rejected marker %s, which it was not given: %w", me.Marker.ID, err)
			}
		case err != nil:
			if term.Err() != nil {
				return false, termCause(term)
			}
			t.r.m.errors.WithLabelValues("capture").Inc()
			t.r.m.retries.Inc()
			t.log.Warn("resolve capture markers; retrying", "markers", len(markers), "err", err)
			bo.sleep(term)
			return false, nil
		default:
			t.r.m.markers.Add(float64(len(markers)))
			if err := t.resolved(term); err != nil {
				// Resolved again after the backoff: duplicates, harmless.
				if term.Err() != nil {
					return false, termCause(term)
				}
				t.r.m.errors.WithLabelValues("database").Inc()
				t.r.m.retries.Inc()
				t.log.Warn("extend the drain past a capture resolution; retrying", "err", err)
				bo.sleep(term)
				return false, nil
			}
		}
	}
	if len(rejected) > 0 {
		_, err := t.failed(term, b, outcome{rejected: rejected}, bo)
		return false, err
	}
	b.records = events
	return true, nil
}

// resolved runs once a resolution has committed. A WAL drain moves its
// target past the resolution's commit, so that it exits only once the
// resolved events are published too (the table source's drain reads on
// until the outbox is empty, which takes them in).
func (t *termLoop) resolved(term context.Context) error {
	ws, ok := t.src.(*walSource)
	if !ok || !t.r.cfg.Drain {
		return nil
	}
	return ws.extendDrain(term)
}

// unpublished are the keys per topic of recs' events.
func unpublished(recs []record) map[string][]string {
	out := map[string][]string{}
	for _, rec := range recs {
		if !isMarker(rec) {
			out[rec.topic] = append(out[rec.topic], rec.key)
		}
	}
	return out
}
