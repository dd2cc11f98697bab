package bench

// What the peer benchmarks (bench/debezium, bench/watermill: modules of
// their own, so that ecst does not depend on their peers) share.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// RunFor runs run under a deadline of timeout (its -timeout flag), that
// SIGINT and SIGTERM end early. An error after the deadline passed says
// that it did: the run was aborted, its figures are not to be read.
func RunFor(timeout time.Duration, run func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("ABORTED: -timeout %s reached: %w", timeout, err)
	}
	return err
}

// EndOffsets sums the end offsets of topic's partitions: how many records
// (and transaction markers) it holds.
func EndOffsets(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	offs, err := adm.ListEndOffsets(lctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	var sum int64
	var ferr error
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = o.Err
		}
		sum += o.Offset
	})
	return sum, ferr
}
