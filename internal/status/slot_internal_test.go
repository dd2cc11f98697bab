package status

import (
	"strings"
	"testing"
	"time"
)

// TestSlotFindings covers what a live system cannot be put into on cue: a
// leader behind by bytes or by age, a slot about to be invalidated, one
// left behind on the table transport.
func TestSlotFindings(t *testing.T) {
	safe := int64(5 << 20)
	led := Slot{Slot: "ecst_s", Exists: true, WALStatus: "reserved", Leader: true, InTransport: true, ActivePID: 7}
	for _, c := range []struct {
		name string
		mod  func(*Slot)
		want string // severity|message prefix|fix; "" for none
	}{
		{"healthy", func(*Slot) {}, ""},
		{"bytes behind", func(s *Slot) { s.LagBytes = 2 << 30 }, "warning|the slot is 2.0 GiB behind (over --max-slot-lag 1.0 GiB)|"},
		{"old", func(s *Slot) { s.LagAge = 90 }, "critical|the relay streaming the slot confirms WAL written 1m30s ago|"},
		{"unreserved", func(s *Slot) { s.WALStatus, s.SafeWALBytes = "unreserved", &safe }, "critical|wal_status unreserved|"},
		{"left behind", func(s *Slot) { s.InTransport, s.Leader = false, false }, "warning|a slot of the WAL transport is left|ecst outbox switch table"},
		{"invalidated", func(s *Slot) { s.WALStatus = "lost" }, "critical|the WAL transport's replication slot was INVALIDATED|ecst relay --recover-slot"},
	} {
		sl := led
		c.mod(&sl)
		got := slotFindings([]Slot{sl}, time.Minute, 1<<30)
		if c.want == "" {
			if len(got) != 0 {
				t.Errorf("%s: %+v, want none", c.name, got)
			}
			continue
		}
		w := strings.SplitN(c.want, "|", 3)
		if len(got) != 1 || string(got[0].Severity) != w[0] || !strings.HasPrefix(got[0].Message, w[1]) || got[0].Fix != w[2] || got[0].Subject != "slot ecst_s" {
			t.Errorf("%s: %+v, want %s", c.name, got, c.want)
		}
	}
}
