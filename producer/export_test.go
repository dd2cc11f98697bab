package producer

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/ecst-io/ecst/outbox"
)

// WithoutKeyLock makes p insert without the per-key lock, so that a test can
// show the ordering check fails without it.
func WithoutKeyLock(p *Publisher) {
	p.insert = func(ctx context.Context, tx pgx.Tx, r outbox.Row) error {
		if p.transport == outbox.TransportWAL {
			_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'ecst', $1::bytea)`, outbox.EncodeMessage(r))
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO ecst.outbox (shard, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5)`,
			r.Shard, r.Topic, r.Key, r.Value, outbox.EncodeHeaders(r.Headers))
		return err
	}
}
