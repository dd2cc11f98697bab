// Package wait has the one sleep the relay and the consumers share.
package wait

import (
	"context"
	"time"
)

// Sleep sleeps for d or until ctx ends; it reports whether it slept the
// whole time.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
