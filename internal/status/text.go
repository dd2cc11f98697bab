package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// PendingText is a shard's pending rows as a human reads them: "≥ N" past
// the cap.
func (sh Shard) PendingText() string { return count(sh.Pending, sh.Capped) }

// ProgressText is a run's progress: written/selected (percent), ETA.
func (r Run) ProgressText() string {
	if r.Selected == nil {
		return fmt.Sprintf("%d written, counting", r.Written)
	}
	s := fmt.Sprintf("%d/%d (%.0f%%)", r.Written, *r.Selected, r.Progress*100)
	if r.ETA > 0 {
		s += ", ETA " + Age(r.ETA.Duration())
	}
	return s
}

// WriteText writes the snapshot for a terminal, one section per kind of
// thing, attention last where the eye ends.
func (s *Snapshot) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("ecst status of %s at %s", s.Service, s.At.Format(time.RFC3339))
	p("")
	p("ENTITY\tTOPIC\tPARTITIONS\tEND OFFSETS\tCOMPACTION\tTOPIC DRIFT")
	for _, e := range s.Entities {
		if !e.Exists {
			p("%s\t%s\t-\t-\t-\ttopic missing", e.Name, e.Topic)
			continue
		}
		var comp, drift []string
		for _, k := range CompactionKeys {
			if v, ok := e.Compaction[k]; ok {
				comp = append(comp, k+"="+v)
			}
		}
		for _, d := range e.Drift {
			drift = append(drift, fmt.Sprintf("%s=%s (want %s)", d.Setting, d.Have, d.Want))
		}
		p("%s\t%s\t%d\t%d\t%s\t%s", e.Name, e.Topic, e.Partitions, e.EndOffsets, strings.Join(comp, " "), orNone(strings.Join(drift, ", ")))
	}
	p("")
	if s.Transport != "wal" {
		p("SHARD (%s)\tLEADER\tPENDING\tOLDEST", s.Transport)
		for _, sh := range s.Shards {
			oldest := "-"
			if sh.OldestAge > 0 || sh.Pending > 0 {
				oldest = Age(sh.OldestAge.Duration())
			}
			p("%d\t%s\t%s\t%s", sh.Shard, yesNo(sh.Leader), sh.PendingText(), oldest)
		}
		p("")
	}
	if len(s.Slots) > 0 || s.Transport == "wal" {
		p("SLOT (wal)\tLEADER\tWAL STATUS\tACTIVE PID\tLAG\tLAG AGE\tRETAINED\tSAFE WAL")
		for _, sl := range s.Slots {
			p("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", sl.Slot, yesNo(sl.Leader), sl.StatusText(), pidText(sl.ActivePID),
				Bytes(sl.LagBytes), Age(sl.LagAge.Duration()), Bytes(sl.RetainedBytes), sl.SafeText())
		}
		p("")
	}
	if len(s.ReadModels) == 0 {
		p("READ MODELS: none has committed offsets to ecst.consumer_offsets")
	} else {
		p("READ MODEL\tTOPIC\tLAG\tREADY\tLAST COMMIT")
		for _, m := range s.ReadModels {
			ready := yesNo(m.Ready)
			if m.TombstoneRisk {
				ready += " (tombstone risk)"
			}
			p("%s\t%s\t%d\t%s\t%s ago", m.Consumer, m.Topic, m.Lag, ready, Age(s.At.Sub(m.UpdatedAt)))
		}
	}
	p("")
	p("LAST VERIFY\tWHEN\tRESULT\tCOUNTS")
	for _, e := range s.Entities {
		v := e.LastVerify
		if v == nil {
			p("%s\tnever\t-\t-", e.Name)
			continue
		}
		counts := v.Error
		if v.Report != nil {
			counts = fmt.Sprintf("source %d keys, topic %d keys; %s", v.Report.SourceKeys, v.Report.TopicKeys, DriftSummary(v.Report))
		}
		p("%s\t%s ago\t%s\t%s", e.Name, Age(s.At.Sub(v.FinishedAt)), v.Result, counts)
	}
	p("")
	if len(s.Republish) == 0 {
		p("REPUBLISH: no runs")
	} else {
		p("REPUBLISH\tRUN\tSTATE\tPROGRESS\tSTARTED")
		for _, r := range s.Republish {
			p("%s\t%d\t%s\t%s\t%s ago", r.Entity, r.ID, r.State, r.ProgressText(), Age(s.At.Sub(r.StartedAt)))
		}
	}
	p("")
	if len(s.Capture) > 0 {
		p("CAPTURE\tTABLES\tTRIGGERS\tMARKERS PENDING")
		for _, c := range s.Capture {
			var tables []string
			triggers := "all present"
			for _, t := range c.Tables {
				tables = append(tables, t.Name)
			}
			if !c.Healthy() {
				triggers = "MISSING (ecst capture status)"
			}
			p("%s\t%s\t%s\t%s", c.Entity, orNone(strings.Join(tables, ", ")), triggers, c.PendingText())
		}
		p("")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(s.Attention) == 0 {
		_, err := fmt.Fprintln(out, "ATTENTION: nothing needs attention")
		return err
	}
	fmt.Fprintf(out, "ATTENTION: %d finding(s)\n", len(s.Attention))
	for _, f := range s.Attention {
		fmt.Fprintf(out, "  %-8s  %s: %s\n", f.Severity, f.Subject, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(out, "            fix: %s\n", f.Fix)
		}
	}
	return nil
}

// StatusText is the slot's wal_status, or "LOST" when PostgreSQL no
// longer has it.
func (sl Slot) StatusText() string {
	if !sl.Exists {
		return "LOST"
	}
	return sl.WALStatus
}

// SafeText is safe_wal_size for a human: "no limit" without
// max_slot_wal_keep_size.
func (sl Slot) SafeText() string {
	if sl.SafeWALBytes == nil {
		return "no limit"
	}
	return Bytes(*sl.SafeWALBytes)
}

func pidText(pid int) string {
	if pid == 0 {
		return "-"
	}
	return fmt.Sprint(pid)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
