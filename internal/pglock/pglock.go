// Package pglock is the one registry of the PostgreSQL advisory locks ecst
// takes. PostgreSQL keeps two key spaces apart: one bigint, and pairs of
// int4 (class, object). The bigint space belongs to the per-key locks of the
// write path (outbox.KeyLock hashes a topic and key onto all of it); every
// other lock is a (class, object) pair named here, so that no two purposes
// can ever meet on one lock.
package pglock

import "hash/fnv"

// Classes of the two-int4 key space. Each names one purpose; objects within
// a class are that purpose's own.
const (
	// ECST holds ecst's singletons and ranges: see the Obj constants.
	ECST int32 = 0x65637374 // "ecst"
	// Model is the class of read models: object = hash of (consumer, topic)
	// (consumer.Postgres takes it per batch, rebuild to swap tables).
	Model int32 = 0x6563736d // "ecsm"
	// Republish is the class of republish runs: object = Hash(entity), held
	// for a run's whole session so that one entity never has two runs.
	Republish int32 = 0x65637372 // "ecsr"
)

// Objects of class ECST.
const (
	// ObjMigrate serializes migrators (a session lock, held while migrating).
	ObjMigrate int32 = 1
	// ObjRelayWAL is the leader lock of the WAL transport's relay: one
	// leader streams the replication slot.
	ObjRelayWAL int32 = 2
	// ObjWALAdmin serializes what changes the WAL transport's set-up: slot
	// creation and recovery, `ecst outbox switch` (a session lock).
	ObjWALAdmin int32 = 3
	// ObjRelayShard + shard is the leader lock of an outbox shard: 100 to
	// 100+MaxShards-1 (outbox.MaxShards is 256).
	ObjRelayShard int32 = 100
)

// Hash maps a name onto an int4 object, for classes whose objects are
// names (FNV-1a, 32 bits; a collision only serializes two names).
func Hash(parts ...string) int32 {
	h := fnv.New32a()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	return int32(h.Sum32()) //nolint:gosec // a wrapping conversion is the intent
}
