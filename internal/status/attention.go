package status

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ecst-io/ecst/verify"
)

// attention finds what needs an operator in s, the most severe first. Each
// Fix is a command that works as written (the CLI's rule); where no
// command fixes a thing, the message says what to look at instead.
func attention(s *Snapshot, o Options) []Finding {
	var out []Finding
	add := func(sev Severity, subject, fix, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Subject: subject, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	out = append(out, shardFindings(s.Shards, o.MaxBacklogAge)...)
	out = append(out, slotFindings(s.Slots, o.MaxBacklogAge, o.MaxSlotLag)...)
	for _, e := range s.Entities {
		switch {
		case !e.Exists:
			add(Critical, "entity "+e.Name, "ecst topics apply", "topic %s does not exist: the relay cannot publish %s", e.Topic, e.Name)
		case len(e.Drift) > 0:
			fix, what := "ecst topics apply --fix", make([]string, len(e.Drift))
			for i, d := range e.Drift {
				what[i] = fmt.Sprintf("%s is %q, ecst.yaml wants %q", d.Setting, d.Have, d.Want)
				if d.Setting == "partitions" {
					fix = "" // refused by topics apply: it would break per-key order
				}
			}
			add(Warning, "entity "+e.Name, fix, "topic %s: %s", e.Topic, strings.Join(what, "; "))
		}
		if v := e.LastVerify; v != nil {
			verifyFinding(e.Name, v, add)
		}
	}
	for _, r := range s.Republish {
		if r.State == "failed" || r.State == "abandoned" {
			why := r.Error
			if r.State == "abandoned" {
				why = "its process stopped without finishing"
			}
			add(Critical, fmt.Sprintf("republish run %d", r.ID), fmt.Sprintf("ecst republish %s --resume %d", shellArg(r.Entity), r.ID),
				"the latest republish run of %s %s after writing %d rows: %s", r.Entity, r.State, r.Written, why)
		}
	}
	for _, m := range s.ReadModels {
		readModelFinding(m, s.At, o.MaxBacklogAge, add)
	}
	for _, c := range s.Capture {
		if !c.Healthy() {
			add(Warning, "capture of "+c.Entity, "ecst capture enable "+shellArg(c.Entity),
				"a capture trigger or function is missing, or a table of ecst.yaml has none: writes to it publish nothing (`ecst capture status` lists them)")
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int { return cmp.Compare(rank(a.Severity), rank(b.Severity)) })
	return out
}

func rank(s Severity) int {
	if s == Critical {
		return 0
	}
	return 1
}

type addFunc func(sev Severity, subject, fix, format string, args ...any)

func shardFindings(shards []Shard, maxAge time.Duration) []Finding {
	var out []Finding
	var unled []string
	var waiting int64
	capped := false
	for _, sh := range shards {
		if !sh.Leader {
			unled = append(unled, fmt.Sprint(sh.Shard))
			waiting += sh.Pending
			capped = capped || sh.Capped
			continue
		}
		if age := sh.OldestAge.Duration(); age > maxAge {
			out = append(out, Finding{Severity: Critical, Subject: fmt.Sprintf("outbox shard %d", sh.Shard),
				Message: fmt.Sprintf("the oldest of %s pending rows has waited %s (over --max-backlog-age %s): the relay leading it is behind or stuck; see its log and ecst_relay_* metrics",
					count(sh.Pending, sh.Capped), Age(age), maxAge)})
		}
	}
	if len(unled) > 0 {
		sev, msg := Warning, fmt.Sprintf("no relay leads outbox shard %s: rows written now will wait", strings.Join(unled, ", "))
		if waiting > 0 {
			sev = Critical
			msg = fmt.Sprintf("no relay leads outbox shard %s: %s pending rows wait", strings.Join(unled, ", "), count(waiting, capped))
		}
		out = append(out, Finding{Severity: sev, Subject: "relay", Message: msg, Fix: "ecst relay"})
	}
	return out
}

func verifyFinding(entity string, v *verify.Record, add addFunc) {
	mirror := ""
	if v.Mirror != "" {
		mirror = " --mirror " + shellArg(v.Mirror)
	}
	when := v.FinishedAt.Format(time.RFC3339)
	switch v.Result {
	case verify.ResultDrift:
		add(Critical, "entity "+entity, "ecst verify "+shellArg(entity)+mirror+" --repair",
			"the last verify (%s) found drift: %s", when, DriftSummary(v.Report))
	case verify.ResultError:
		add(Warning, "entity "+entity, "ecst verify "+shellArg(entity)+mirror,
			"the last verify (%s) failed: %s", when, v.Error)
	}
}

// DriftSummary says what a verification found, in counts.
func DriftSummary(r *verify.Report) string {
	if r == nil {
		return "no report"
	}
	s := fmt.Sprintf("topic: %d missing, %d extra, %d stale", r.Missing, r.Extra, r.Stale)
	if m := r.Mirror; m != nil {
		s += fmt.Sprintf("; mirror %s: %d missing, %d extra, %d stale", m.Table, m.Missing, m.Extra, m.Stale)
	}
	return s
}

func readModelFinding(m ReadModel, now time.Time, maxAge time.Duration, add addFunc) {
	if m.Ready {
		return
	}
	idle := now.Sub(m.UpdatedAt)
	subject := "consumer " + m.Consumer
	switch {
	case m.TombstoneRisk:
		fix, what := "", "rebuild it from offset 0"
		if m.Mirror != "" {
			fix = "ecst rebuild " + shellArg(m.Consumer)
		}
		add(Critical, subject, fix, "%d offsets behind on %s and idle for %s, longer than the topic's delete.retention.ms: compaction may have dropped tombstones it never read; %s",
			m.Lag, m.Topic, Age(idle), what)
	case idle > maxAge:
		fix := ""
		if m.Mirror != "" && m.Entity != "" {
			fix = "ecst mirror " + shellArg(m.Entity) + " --table " + shellArg(m.Mirror)
		}
		add(Warning, subject, fix, "%d offsets behind on %s and no commit for %s: is it running?", m.Lag, m.Topic, Age(idle))
	}
}

func count(n int64, capped bool) string {
	if capped {
		return fmt.Sprintf("≥ %d", n)
	}
	return fmt.Sprint(n)
}

// Age writes a duration for a human: to the second, or the minute past an
// hour.
func Age(d time.Duration) string {
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// shellArg quotes s for a POSIX shell when it must.
func shellArg(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
