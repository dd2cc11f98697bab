package consumer

import (
	"context"
	"maps"
	"sync"
)

// Memory is a read model in a concurrent map. It starts empty in every
// process and is rebuilt from the topic, so it has nothing to lose.
type Memory[T any] struct {
	mu      sync.RWMutex
	m       map[string]entry[T]
	offsets map[int32]int64
	ready   func() bool
}

// entry is a key's state and the partition it came from. One map rather
// than two halves the hashing and growth of a replay.
type entry[T any] struct {
	state T
	part  int32
}

// NewMemory returns an empty model.
func NewMemory[T any]() *Memory[T] {
	return &Memory[T]{m: map[string]entry[T]{}, offsets: map[int32]int64{}}
}

// Bind makes reads refuse with ErrNotReady until ready reports true
// (Consumer.Ready): a model still catching up is never served as if whole.
func (s *Memory[T]) Bind(ready func() bool) { s.ready = ready }

// Offsets returns what this process has applied: a new process replays
// from the start.
func (s *Memory[T]) Offsets(context.Context, string, string) (map[int32]int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.offsets), nil
}

// Apply applies a batch under the write lock, so readers see it whole.
func (s *Memory[T]) Apply(_ context.Context, _ string, b *Batch[T]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range b.Changes {
		c := &b.Changes[i]
		if c.Deleted {
			delete(s.m, c.Key)
		} else {
			s.m[c.Key] = entry[T]{state: c.State, part: c.Partition}
		}
	}
	maps.Copy(s.offsets, b.Next)
	return nil
}

// Revoke drops the keys and offsets of partitions this instance no longer
// owns (partitioned mode): if they come back, they are replayed.
func (s *Memory[T]) Revoke(partitions []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := map[int32]bool{}
	for _, p := range partitions {
		gone[p] = true
		delete(s.offsets, p)
	}
	for k, e := range s.m {
		if gone[e.part] {
			delete(s.m, k)
		}
	}
}

// Get returns the state of key.
func (s *Memory[T]) Get(key string) (T, bool, error) {
	var zero T
	if s.ready != nil && !s.ready() {
		return zero, false, ErrNotReady
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.m[key]
	return e.state, ok, nil
}

// Snapshot returns a copy of the whole model.
func (s *Memory[T]) Snapshot() (map[string]T, error) {
	if s.ready != nil && !s.ready() {
		return nil, ErrNotReady
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]T, len(s.m))
	for k, e := range s.m {
		out[k] = e.state
	}
	return out, nil
}

// Len is the number of entities held.
func (s *Memory[T]) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}
