-- The WAL transport (outbox.transport: wal). Writers emit each event as a
-- transactional logical decoding message; one relay leader streams them from
-- a logical replication slot. The database records which transport it runs,
-- and `ecst outbox switch` moves it from one to the other (docs/operations.md).

-- One row while the database runs the WAL transport, none while it runs the
-- table transport. A WAL writer's statement reads it and emits nothing (an
-- error for the caller) without the row; in WAL mode ecst.outbox carries the
-- constraint ecst_outbox_transport_is_wal, CHECK (false) NOT VALID, which
-- fails a table writer's insert. Both gates cost the right writer nothing.
CREATE TABLE ecst.wal_enabled (
    enabled boolean PRIMARY KEY DEFAULT true CHECK (enabled)
);

COMMENT ON TABLE ecst.wal_enabled IS
    'One row while the database runs the WAL outbox transport. Change it only with `ecst outbox switch`.';

-- The replication slots ecst created, so that a slot that is missing later
-- is known to be LOST (a failover to a standby without it, or dropped by
-- hand) rather than never created. A slot ecst dropped itself (a switch to
-- the table transport, a recovery) keeps its row, with dropped_at set.
CREATE TABLE ecst.wal_slots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name   text        NOT NULL,
    service     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_lsn pg_lsn      NOT NULL, -- the slot's consistent point
    dropped_at  timestamptz,
    dropped_why text
);

CREATE UNIQUE INDEX wal_slots_live ON ecst.wal_slots (slot_name) WHERE dropped_at IS NULL;

-- Every switch between transports; the newest row's transport is the one the
-- database runs. A switch first closes the old transport to writers, waits
-- until its relay has published everything it holds, and only then opens the
-- new one (finished_at): every event written before the switch reaches Kafka
-- before any written after. A switch to the table transport records the WAL
-- position where the WAL closed: everything the slot holds is before it.
CREATE TABLE ecst.transport_switches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transport   text        NOT NULL CHECK (transport IN ('table', 'wal')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    wal_lsn     pg_lsn,
    finished_at timestamptz
);
