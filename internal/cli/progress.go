package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// report is what the progress reports share: a progress bar when w is a
// terminal, plain lines at most every 5 seconds otherwise (logs, CI).
type report struct {
	mu    sync.Mutex
	w     io.Writer
	what  string
	bar   *progressbar.ProgressBar // nil: plain lines
	start time.Time
	last  time.Time // of the last plain line
}

// init starts the report; opts add to the bar's options.
func (r *report) init(w io.Writer, what string, opts ...progressbar.Option) {
	r.w, r.what, r.start = w, what, time.Now()
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.bar = progressbar.NewOptions64(-1, append([]progressbar.Option{
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionClearOnFinish(),
		}, opts...)...)
	}
}

// due says whether a plain line is due, and if so counts it as written:
// the last one always is, the others at most every 5 seconds.
func (r *report) due(done bool) bool {
	if time.Since(r.last) < 5*time.Second && !done {
		return false
	}
	r.last = time.Now()
	return true
}

// rate is n per second since the start.
func (r *report) rate(n int64) float64 {
	return float64(n) / max(time.Since(r.start).Seconds(), 0.001)
}

func (r *report) finish() {
	if r.bar != nil {
		_ = r.bar.Finish()
	}
}

// progress reports long work counted in records: with rate and ETA.
type progress struct {
	report
}

func newProgress(w io.Writer, what string) *progress {
	p := &progress{}
	p.init(w, what,
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("records"),
	)
	return p
}

// update sets done out of total.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if total <= 0 {
		total = -1 // unknown: a spinner with a count
	}
	if p.bar != nil {
		if p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		_ = p.bar.Set64(done)
		return
	}
	if !p.due(done >= total && total >= 0) {
		return
	}
	rate := p.rate(done)
	if total < 0 {
		fmt.Fprintf(p.w, "%s: %d records, %.0f records/s\n", p.what, done, rate)
		return
	}
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	eta := "-"
	if rate > 0 && done < total {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "%s: %d/%d (%.0f%%), %.0f records/s, eta %s\n", p.what, done, total, pct, rate, eta)
}
