package republish_test

import (
	"context"
	"testing"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/republish"
)

// BenchmarkRepublish republishes b.N rows of a customers table into the
// outbox. ecst bench recovery measures it against COPY at scale.
func BenchmarkRepublish(b *testing.B) {
	w := ecsttest.New(b, ecsttest.Options{})
	ctx := context.Background()
	w.Exec(`INSERT INTO customers (id, version, name, email, tier, updated_at)
		SELECT 'c' || lpad(i::text, 9, '0'), 1, 'name ' || i || ' ' || repeat('x', 200), 'customer' || i || '@example.com',
		       CASE WHEN i % 3 = 0 THEN 'gold' END, now()
		FROM generate_series(1, $1) AS i`, b.N)
	w.Exec(`VACUUM ANALYZE customers`)
	b.ResetTimer()
	res, err := republish.Run(ctx, cfg(w), republish.Options{All: true, MaxBacklog: -1})
	if err != nil {
		b.Fatal(err)
	}
	if res.Written != int64(b.N) {
		b.Fatalf("wrote %d of %d", res.Written, b.N)
	}
}
