package cli_test

import (
	"regexp"
	"testing"
)

// TestBenchCommandsRun: each `ecst bench` command runs end to end on a
// small load (on kfake and a throwaway durable PostgreSQL), and reports
// every figure it promises.
func TestBenchCommandsRun(t *testing.T) {
	t.Parallel()
	const rate = `\d+`
	for _, c := range []struct {
		args []string
		want []string // regexps, one per line of output, in order
	}{
		{[]string{"bench", "relay", "--rows", "300", "--rounds", "1", "--batch", "100", "--steady", "500ms", "--rate", "200", "--rss-rows", "0"}, []string{
			`starting a throwaway PostgreSQL \(fsync on\)\.\.\.`,
			`relay drain: 300 rows of 300 B, batch 100, kfake \(in process\), 2 cores`,
			`round\s+ceiling rows/s\s+ecst rows/s\s+ecst/ceiling`,
			`1\s+` + rate + `\s+` + rate + `\s+[\d.]+`,
			`mean ecst/ceiling: [\d.]+`,
			`steady state: 200 rows/s offered, ` + rate + ` written; commit-to-ack p50 [\d.]+ ms, p99 [\d.]+ ms`,
		}},
		{[]string{"bench", "consumer", "--entities", "300"}, []string{
			`writing 300 entities to kfake \(in process\)\.\.\.`,
			`raw consumption:\s+` + rate + ` entities/s`,
			`memory model \(generated type\):\s+` + rate + ` entities/s  \([\d.]+ x raw\)`,
			`postgres mirror:\s+` + rate + ` entities/s  \([\d.]+ x raw\)`,
		}},
		{[]string{"bench", "e2e", "--rates", "100", "--duration", "500ms", "--warmup", "200ms", "--writers", "2"}, []string{
			`starting a throwaway PostgreSQL \(fsync on\)\.\.\.`,
			`commit -> read model applied, kfake \(in process\), durable PostgreSQL, 2 writers, table transport, 2 cores`,
			`\(warm-up: 200ms at 1000/s, not counted\)`,
			`offered/s\s+written/s\s+p50 ms\s+p99 ms\s+max ms\s+events\s+dead tuples`,
			`100\s+` + rate + `\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+` + rate + `\s+0`,
		}},
		{[]string{"bench", "recovery", "--rows", "300", "--batch", "50"}, []string{
			`starting a throwaway PostgreSQL \(fsync on\)\.\.\.`,
			`filling customers with 300 rows\.\.\.`,
			`copy\s+` + rate + ` rows/s  \(.+\)`,
			`republish\s+` + rate + ` rows/s  \(.+, 300 rows, batch 50\) = [\d.]+× copy`,
			`relaying 300 rows to kfake \(in process\)\.\.\.`,
			`relay\s+` + rate + ` rows/s  \(.+\)`,
			`raw scan\s+` + rate + ` records/s  \(.+, 300 records\)`,
			`verify\s+` + rate + ` keys/s  \(.+ for 300 keys; in sync: true\) = [\d.]+× the raw scan's time`,
		}},
	} {
		t.Run(c.args[1], func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, c.args...)
			if r.code != 0 {
				t.Fatalf("code %d\n%s%s", r.code, r.out, r.err)
			}
			var lines []string
			for _, l := range regexp.MustCompile(`\n+`).Split(r.out, -1) {
				if l != "" {
					lines = append(lines, l)
				}
			}
			if len(lines) != len(c.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(c.want), r.out)
			}
			for i, w := range c.want {
				if !regexp.MustCompile(`^\s*` + w + `\s*$`).MatchString(lines[i]) {
					t.Errorf("line %d %q does not match %q", i+1, lines[i], w)
				}
			}
		})
	}
}
