-- Capture: every write to an entity's source tables publishes the entity's
-- full state. A write records, inside its own transaction, a marker: "these
-- keys of entity E changed". The marker travels through the outbox transport
-- like an event, and the relay resolves it: under the keys' locks it reads
-- their current state through the entity's source query and writes those
-- events behind everything already waiting. docs/architecture.md, "Capture",
-- has the argument.
--
-- A marker's content is JSON:
--   {"entity": "customer", "keys": ["c1", "c2"]}   these keys changed
--   {"entity": "customer", "all": true}            every key (TRUNCATE)
-- It travels by the transport the database runs, decided at each call:
--   table: an ecst.outbox row on the reserved topic _ecst.capture, in shard
--          0, its key the entity's name;
--   wal:   a transactional logical decoding message with the prefix
--          ecst.capture (ecst.wal_enabled has its row; migration 003).
-- Reading ecst.wal_enabled holds a share lock on it until the transaction
-- ends, as a WAL writer's does, which `ecst outbox switch table` waits for.
-- While a switch is under way neither transport takes a marker, and the
-- writing statement fails, as a Go producer's write does. The relay never
-- produces a marker to Kafka.

-- What `ecst capture enable` installed, one row per (entity, table), so that
-- `ecst capture disable` removes exactly that and `ecst capture status` finds
-- what is missing.
CREATE TABLE ecst.capture_tables (
    entity       text        NOT NULL,
    table_name   text        NOT NULL, -- schema-qualified, quoted as needed
    key_column   text        NOT NULL, -- the column holding the entity key
    function     text        NOT NULL, -- the trigger function, ecst."..."
    triggers     text[]      NOT NULL, -- the trigger names on table_name
    installed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, table_name)
);

COMMENT ON TABLE ecst.capture_tables IS
    'Capture triggers installed by `ecst capture enable`; `ecst capture disable` removes them.';

-- ecst.write_marker writes one marker, by the database's transport.
CREATE FUNCTION ecst.write_marker(entity text, marker json) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM ecst.wal_enabled) THEN
        PERFORM pg_logical_emit_message(true, 'ecst.capture', convert_to(marker::text, 'UTF8'));
    ELSE
        INSERT INTO ecst.outbox (shard, topic, key, value, headers)
        VALUES (0, '_ecst.capture', entity, convert_to(marker::text, 'UTF8'), '\x01'::bytea);
    END IF;
END
$$;

-- ecst.capture writes one marker for keys of entity, in the caller's
-- transaction. NULL and empty keys are dropped; no key, no marker. It runs
-- as its owner (the role that migrated ecst), so that a role that may write
-- a captured table needs no privilege on ecst.outbox; search_path is fixed
-- so that the caller's cannot redirect it.
CREATE FUNCTION ecst.capture(entity text, keys text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ks text[];
BEGIN
    IF entity IS NULL OR entity = '' THEN
        RAISE EXCEPTION 'ecst.capture: entity is required' USING ERRCODE = '22004';
    END IF;
    SELECT array_agg(DISTINCT k ORDER BY k) INTO ks FROM unnest(keys) AS k WHERE k IS NOT NULL AND k <> '';
    IF ks IS NULL THEN
        RETURN;
    END IF;
    PERFORM ecst.write_marker(entity, json_build_object('entity', entity, 'keys', ks));
END
$$;

-- ecst.capture_all writes a marker for every key of entity: a TRUNCATE.
CREATE FUNCTION ecst.capture_all(entity text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF entity IS NULL OR entity = '' THEN
        RAISE EXCEPTION 'ecst.capture_all: entity is required' USING ERRCODE = '22004';
    END IF;
    PERFORM ecst.write_marker(entity, json_build_object('entity', entity, 'all', true));
END
$$;

-- ecst.publish is the call for services in any language: publish the
-- current full state of these keys, read by the relay from the entity's
-- source query, once the caller's transaction commits. No Avro in the
-- client. It works whether or not capture is enabled for the entity.
--   SELECT ecst.publish('customer', 'c42');
--   SELECT ecst.publish('customer', ARRAY['c1', 'c2']);
CREATE FUNCTION ecst.publish(entity text, keys text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF keys IS NULL OR EXISTS (SELECT 1 FROM unnest(keys) AS k WHERE k IS NULL OR k = '') THEN
        RAISE EXCEPTION 'ecst.publish(%, ...): a key is NULL or empty', entity
            USING ERRCODE = '22004', HINT = 'pass the entity ids whose current state to publish';
    END IF;
    PERFORM ecst.capture(entity, keys);
END
$$;

-- A driver that sends an array parameter untyped (psycopg does, for a list of
-- str) reaches this overload with the array's text, '{a,b}': refused with the
-- fix rather than published as one odd key.
CREATE FUNCTION ecst.publish(entity text, key text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF key LIKE '{%}' THEN
        RAISE EXCEPTION 'ecst.publish(%, %): the key looks like an array passed as text', entity, key
            USING ERRCODE = '22023', HINT = 'cast the parameter to an array: SELECT ecst.publish(''customer'', $1::text[])';
    END IF;
    PERFORM ecst.publish(entity, ARRAY[key]);
END
$$;
