package relay_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/wait"
)

func TestRelayDeliversInOrder(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relayDeliversInOrder(t, o)
		})
	}
}

func relayDeliversInOrder(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	stop := e.runRelay(e.relayConfig())
	log, waitWriters := e.runLoad(context.Background(), 8, 200, 3000)
	waitWriters()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	committed := e.caughtUp() // what committed before the drain started
	e.drain()
	if !committed() {
		t.Fatalf("events left after drain: %d", e.backlog())
	}
	rep := e.check(log)
	t.Logf("%d events committed, %d records on the topic for %d keys, %d duplicates", log.count(), rep.records, rep.keys, rep.duplicates)
}

// TestRelaySIGKILL kills the relay process mid-batch, again and again,
// while writers keep committing; nothing committed may be lost, and every
// key must end on its newest state.
func TestRelaySIGKILL(t *testing.T) {
	t.Parallel()
	for _, o := range transports() {
		t.Run(o.name(), func(t *testing.T) {
			t.Parallel()
			relaySIGKILL(t, o)
		})
	}
}

func relaySIGKILL(t *testing.T, o envOpts) {
	e := newEnv(t, o)
	log, stopWriters := e.startLoad(6, 200, 20_000)
	for round := range 3 {
		p := e.startRelayProc()
		p.waitLog(t, o.leading(), 30*time.Second)
		// Kill once the relay has published something in this round.
		// (Writers may outpace it: after 30s, kill it anyway.)
		before := e.published()
		_ = wait.Until(context.Background(), 30*time.Second, 5*time.Millisecond, "the relay to publish", func() (bool, error) {
			return e.published() > before, nil
		})
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.exited
		t.Logf("round %d: killed the relay with %d events committed, %d waiting", round, log.count(), e.backlog())
	}
	stopWriters()
	// A fresh relay, as an operator would run it, finishes the job.
	committed := e.caughtUp() // what committed before the drain started
	p := e.startRelayProc("--drain")
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("relay --drain did not finish")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("relay --drain exited %d:\n%s", code, p.out.String())
	}
	if !committed() {
		t.Fatalf("events left after drain: %d", e.backlog())
	}
	rep := e.check(log)
	t.Logf("%d events committed, %d records, %d keys, %d duplicates after 3 SIGKILLs", log.count(), rep.records, rep.keys, rep.duplicates)
}

// TestRelayOverSASL runs the relay against a broker that requires SASL.
func TestRelayOverSASL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{sasl: true})
	log, waitWriters := e.runLoad(context.Background(), 4, 50, 500)
	waitWriters()
	e.drain()
	e.check(log)
}
