package cli_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ecst-io/ecst/internal/cli"
)

// TestBenchE2EHoldSnapshot: `ecst bench e2e --hold-snapshot` holds a
// snapshot for the run, times its last --duration, and reports the
// outbox's dead tuples: none for either transport; --transport wal runs
// the WAL transport (its warm-up and its run stream the same slot). Its options are
// checked before anything starts.
func TestBenchE2EHoldSnapshot(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--transport", "kafka"}, `--transport "kafka": use table or wal`},
		{[]string{"--hold-snapshot", "1s", "--duration", "2s"}, "at least as long as --duration"},
	} {
		r := run(t, nil, append([]string{"bench", "e2e"}, c.args...)...)
		if r.code != cli.ExitError || !strings.Contains(r.err, c.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, r.code, r.err, c.want)
		}
	}
	r := run(t, nil, "bench", "e2e", "--rates", "200", "--duration", "1s", "--hold-snapshot", "2s", "--warmup", "0", "--writers", "4")
	if r.code != 0 {
		t.Fatalf("code %d\n%s%s", r.code, r.out, r.err)
	}
	row := regexp.MustCompile(`(?m)^\s+200\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+0$`)
	if !strings.Contains(r.out, "a REPEATABLE READ snapshot held for 2s") || !row.MatchString(r.out) {
		t.Fatalf("output lacks the snapshot, or a row with no dead tuples:\n%s", r.out)
	}
	r = run(t, nil, "bench", "e2e", "--transport", "wal", "--rates", "200", "--duration", "1s", "--hold-snapshot", "2s", "--warmup", "1s", "--writers", "4")
	if r.code != 0 {
		t.Fatalf("--transport wal: code %d\n%s%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.out, "wal transport") || !row.MatchString(r.out) {
		t.Fatalf("--transport wal: output lacks the transport, or a row with no dead tuples:\n%s", r.out)
	}
}
