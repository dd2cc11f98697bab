-- The customers service's own table: the source of truth.
CREATE TABLE IF NOT EXISTS customers (
    id         text PRIMARY KEY,
    version    bigint      NOT NULL,
    name       text        NOT NULL,
    email      text        NOT NULL,
    tier       text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
