-- The outbox: a delete-based queue. Writers insert at the tail inside their
-- own transactions; each shard's relay leader reads the head of its shard in id
-- order and deletes rows once the broker has acknowledged them. Nothing is ever
-- updated, so the only index is the primary key (shard, id) the relay walks.
CREATE TABLE ecst.outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    shard      smallint    NOT NULL DEFAULT 0, -- hash of (topic, key) mod outbox.shards
    topic      text        NOT NULL,
    key        text        NOT NULL,
    value      bytea,                -- Confluent wire format; NULL is a tombstone
    headers    bytea       NOT NULL, -- Kafka headers, ecst header encoding (see outbox/headers.go)
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shard, id)
) WITH (
    -- Every row is inserted once and deleted once: vacuum early and often so
    -- that the relay does not wade through dead index tuples at the head of the
    -- queue, and never let a vacuum sleep for cost accounting.
    autovacuum_vacuum_scale_factor         = 0,
    autovacuum_vacuum_threshold            = 5000,
    autovacuum_vacuum_insert_scale_factor  = 0,
    autovacuum_vacuum_insert_threshold     = 50000,
    autovacuum_analyze_scale_factor        = 0,
    autovacuum_analyze_threshold           = 50000,
    autovacuum_vacuum_cost_delay           = 0
);

COMMENT ON TABLE ecst.outbox IS
    'Full-state events waiting for the ecst relay. Rows are deleted once Kafka acknowledges them.';

-- Rows the broker rejected for good (too large, say) under the relay's park
-- policy. A later full state of the key supersedes a parked one; `ecst verify`
-- finds a key left stale.
CREATE TABLE ecst.outbox_parked (
    id         bigint      NOT NULL PRIMARY KEY, -- the outbox id
    shard      smallint    NOT NULL,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    value      bytea,
    headers    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    error      text        NOT NULL
);

-- One row per forced full-state republish, so a run can be resumed and watched.
CREATE TABLE ecst.republish_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity             text        NOT NULL,
    selection          jsonb       NOT NULL,       -- all / keys / where, and the options given
    cursor_key         text,                        -- last key written, for --resume
    state              text        NOT NULL DEFAULT 'running'
                       CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    rows_selected      bigint,                      -- known once counted; NULL until then
    rows_written       bigint      NOT NULL DEFAULT 0,
    tombstones_written bigint      NOT NULL DEFAULT 0,
    error              text,
    started_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);

CREATE INDEX republish_runs_entity_started ON ecst.republish_runs (entity, started_at DESC);

-- Read models kept in Postgres commit their offsets here in the same
-- transaction as their rows: the exactly-once effect.
CREATE TABLE ecst.consumer_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Poison records passed over by a consumer with the skip policy, kept whole
-- so that they can be inspected and replayed.
CREATE TABLE ecst.consumer_skipped (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer   text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    "offset"   bigint      NOT NULL,
    key        bytea,
    value      bytea,
    headers    jsonb       NOT NULL DEFAULT '{}',
    error      text        NOT NULL,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, partition, "offset")
);
