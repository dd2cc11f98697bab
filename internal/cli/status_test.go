package cli

import (
	"bytes"
	"testing"

	"github.com/ecst-io/ecst/verify"
)

// TestVerifyWatch: what `ecst verify` shows while it works counts what a
// user thinks of (source keys, topic records, mirror rows; outbox rows and
// mirror offsets while a repair waits), and says at once what a repair
// waits for.
func TestVerifyWatch(t *testing.T) {
	var b bytes.Buffer
	a := &app{}
	w := &verifyWatch{a: a, entity: "customer", topic: "customers.state", mirror: "billing customers"}
	w.status = newStatus(&b, w.line)
	w.status.every = 0 // every tick shows
	for _, p := range []verify.Progress{
		{Phase: verify.PhaseSource, Done: 10_000},
		{Phase: verify.PhaseTopic, Done: 20_000},
		{Phase: verify.PhaseMirror, Done: 30_000},
		{Phase: verify.PhaseRepublish, Done: 2, Total: 2},
		{Phase: verify.PhaseRelay, Total: 5},
		{Phase: verify.PhaseRelay, Done: 3, Total: 5},
		{Phase: verify.PhaseCatchUp, Total: 8},
		{Phase: verify.PhaseCatchUp, Done: 8, Total: 8},
	} {
		w.progress(p)
	}
	want := `verify customer: read 10000 source keys, 0 topic records, 0 mirror rows
verify customer: read 10000 source keys, 20000 topic records, 0 mirror rows
verify customer: read 10000 source keys, 20000 topic records, 30000 mirror rows
repair: 2/2 drifted keys written to the outbox
repair: waiting for the relay to publish 5 outbox rows to customers.state
repair: the relay has published 0/5 outbox rows
repair: the relay has published 3/5 outbox rows
repair: waiting for mirror billing customers to consume 8 offsets of customers.state (` + "`ecst mirror customer --table 'billing customers'`" + ` must be running)
repair: mirror billing customers has consumed 0/8 offsets
repair: mirror billing customers has consumed 8/8 offsets
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
