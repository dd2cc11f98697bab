package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// timed runs fn and says how long it took.
func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	if err := fn(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Pace writes as services do, one event per business transaction: writers
// goroutines each call write once per tick until the deadline, rate calls/s
// in all. write(w, i) is writer w's i-th call, i from 0. A writer whose call
// fails stops; the first such error is returned, with how many calls
// succeeded. A cancelled ctx stops every writer and is returned.
func Pace(ctx context.Context, writers, rate int, deadline time.Time, write func(w, i int) error) (int64, error) {
	per := time.Duration(float64(time.Second) * float64(writers) / float64(rate))
	var wg sync.WaitGroup
	var written atomic.Int64
	var werr atomic.Pointer[error]
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(per)
			defer t.Stop()
			for i := 0; time.Now().Before(deadline); i++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if err := write(w, i); err != nil {
					werr.CompareAndSwap(nil, &err)
					return
				}
				written.Add(1)
			}
		}()
	}
	wg.Wait()
	if p := werr.Load(); p != nil {
		return written.Load(), *p
	}
	return written.Load(), ctx.Err()
}
