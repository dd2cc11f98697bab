-- One row per `ecst verify` run (verify.Run records itself when it ends), so
-- that the last verification of each entity, and what it found, outlive the
-- process: `ecst status`, the console and `ecst verify --every` read them.
CREATE TABLE ecst.verify_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity         text        NOT NULL,
    topic          text        NOT NULL,
    mirror         text,                   -- the mirror table compared with the topic, if any
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    duration       interval    NOT NULL,
    -- The verdict: in_sync, drift (drift left: after a repair, what the
    -- repair did not fix) or error (the run could not finish; see error).
    result         text        NOT NULL CHECK (result IN ('in_sync', 'drift', 'error')),
    -- What the verification found (before any repair); NULL when it did not
    -- get that far. The mirror's counts are NULL without a mirror.
    source_keys    bigint,
    topic_keys     bigint,
    topic_records  bigint,
    in_flight      bigint,
    missing        bigint,
    extra          bigint,
    stale          bigint,
    mirror_rows    bigint,
    mirror_lagging bigint,
    mirror_missing bigint,
    mirror_extra   bigint,
    mirror_stale   bigint,
    -- The whole report as `ecst verify --json` prints it: the counts again,
    -- the sample keys and field diffs of each kind of drift (source against
    -- topic, topic against mirror), and what a repair did and found after.
    report         jsonb,
    error          text
);

-- The last runs of an entity, newest first: an index-only walk per entity.
CREATE INDEX verify_runs_entity_started ON ecst.verify_runs (entity, started_at DESC);
