package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/ecst-io/ecst/consumer"
)

// applyProgress reports a mirror's catch-up or a rebuild's replay. It
// counts what the user counts, the records applied; how far along the
// topic it is comes from offsets, which are no count of records
// (transaction markers take offsets too), so they show only as a share.
// A progress bar on a terminal, plain lines at most every 5 seconds
// otherwise.
type applyProgress struct {
	report
	first   *consumer.Progress // the first report and its time: the base of the eta
	firstAt time.Time
	got     consumer.Progress
}

func newApplyProgress(w io.Writer, what string) *applyProgress {
	p := &applyProgress{}
	p.init(w, what)
	return p
}

func (p *applyProgress) update(got consumer.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = got
	if p.first == nil {
		p.first, p.firstAt = &got, time.Now()
	}
	if p.bar != nil {
		if got.End > 0 && p.bar.GetMax64() != got.End {
			p.bar.ChangeMax64(got.End)
		}
		p.bar.Describe(fmt.Sprintf("%s: %s applied", p.what, plural(got.Records(), "record")))
		_ = p.bar.Set64(got.Read)
		return
	}
	done := got.Read >= got.End
	if !p.due(done) {
		return
	}
	rate := p.rate(got.Records())
	eta := ""
	if read := got.Read - p.first.Read; !done {
		eta = ", eta -"
		if read > 0 {
			eta = ", eta " + time.Duration(float64(got.End-got.Read)/float64(read)*float64(time.Since(p.firstAt))).Round(time.Second).String()
		}
	}
	fmt.Fprintf(p.w, "%s: %s applied, %s, %.0f records/s%s\n", p.what, plural(got.Records(), "record"), p.share(), rate, eta)
}

// share says how far along the topic the last report was.
func (p *applyProgress) share() string {
	if p.got.End <= 0 {
		return "the topic read"
	}
	return fmt.Sprintf("%.0f%% of the topic read", 100*float64(min(p.got.Read, p.got.End))/float64(p.got.End))
}

// summary gives the totals: 3 records applied: 2 upserts, 1 deletion.
func (p *applyProgress) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("%s applied: %s, %s", plural(p.got.Records(), "record"), plural(p.got.Upserts, "upsert"), plural(p.got.Deletes, "deletion"))
	if p.got.Skipped > 0 {
		s += fmt.Sprintf("; %s skipped", plural(p.got.Skipped, "poison record"))
	}
	return s
}

// interrupted says how far a catch-up got before it was stopped.
func (p *applyProgress) interrupted() string {
	sum := p.summary()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.first == nil {
		return "nothing applied"
	}
	return sum + ", " + p.share()
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
