-- The outbox becomes an append-only log that the relay reads with a cursor,
-- rotated through partitions that are truncated once published. Rows are
-- never deleted one by one, so a long-held snapshot (pg_dump, an analytics
-- query, an idle transaction) leaves no dead tuples for the relay to walk.
-- docs/architecture.md, "The relay", has the argument.
--
-- Rows waiting in the 001 outbox move over with their ids; the id sequence
-- continues where the old one stopped (ecst.outbox_parked keys on the id).
ALTER TABLE ecst.outbox RENAME TO outbox_001;
ALTER SEQUENCE ecst.outbox_id_seq RENAME TO outbox_001_id_seq;
ALTER INDEX ecst.outbox_pkey RENAME TO outbox_001_pkey;

CREATE TABLE ecst.outbox (
    -- The writer's transaction: the relay watches the transactions that
    -- were in progress when it read past their ids, and finds their rows
    -- by it once they commit.
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Never give this sequence a CACHE: the relay relies on ids being drawn
    -- in increasing order across sessions.
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    shard      smallint    NOT NULL DEFAULT 0 CHECK (shard >= 0 AND shard < 256), -- hash of (topic, key) mod outbox.shards
    topic      text        NOT NULL,
    key        text        NOT NULL,
    value      bytea,                -- Confluent wire format; NULL is a tombstone
    headers    bytea       NOT NULL, -- Kafka headers, ecst header encoding (see outbox/headers.go)
    created_at timestamptz NOT NULL DEFAULT now()
-- Ids run through 8 windows of 65536, cyclically: the window the sequence is
-- in takes the inserts, and the relay truncates the others once every row
-- in them is published. Changing either constant is a new migration.
) PARTITION BY LIST (((id / 65536) % 8));

CREATE TABLE ecst.outbox_0 PARTITION OF ecst.outbox FOR VALUES IN (0);
CREATE TABLE ecst.outbox_1 PARTITION OF ecst.outbox FOR VALUES IN (1);
CREATE TABLE ecst.outbox_2 PARTITION OF ecst.outbox FOR VALUES IN (2);
CREATE TABLE ecst.outbox_3 PARTITION OF ecst.outbox FOR VALUES IN (3);
CREATE TABLE ecst.outbox_4 PARTITION OF ecst.outbox FOR VALUES IN (4);
CREATE TABLE ecst.outbox_5 PARTITION OF ecst.outbox FOR VALUES IN (5);
CREATE TABLE ecst.outbox_6 PARTITION OF ecst.outbox FOR VALUES IN (6);
CREATE TABLE ecst.outbox_7 PARTITION OF ecst.outbox FOR VALUES IN (7);

-- The relay's cursor read walks (shard, id); its read of the transactions it
-- watches walks (txid, id).
CREATE INDEX outbox_shard_id ON ecst.outbox (shard, id);
CREATE INDEX outbox_txid_id ON ecst.outbox (txid, id);

COMMENT ON TABLE ecst.outbox IS
    'Full-state events for the ecst relay. Published rows stay until the relay truncates their partition; the pending ones are those past each shard''s cursor in ecst.relay_cursors.';

INSERT INTO ecst.outbox (txid, id, shard, topic, key, value, headers, created_at) OVERRIDING SYSTEM VALUE
SELECT pg_current_xact_id(), id, shard, topic, key, value, headers, created_at FROM ecst.outbox_001 ORDER BY id;

SELECT setval('ecst.outbox_id_seq', last_value, is_called) FROM ecst.outbox_001_id_seq;

DROP TABLE ecst.outbox_001;

-- Each shard's relay position, written by its leader through its lock
-- session (so only the leader of the moment writes it), at most once a
-- second. A row of the shard is published when its id is at most cursor
-- and its transaction is not watched: watched_lo[i] <= txid < watched_hi[i]
-- with id > watched_low[i] (transactions that were in progress when the
-- relay read past their ids). A shard without a row has published nothing.
CREATE TABLE ecst.relay_cursors (
    shard       smallint    PRIMARY KEY,
    cursor      bigint      NOT NULL,
    watched_lo  xid8[]      NOT NULL,
    watched_hi  xid8[]      NOT NULL,
    watched_low bigint[]    NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
