package republish_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
)

// TestConvergence is the property behind `ecst republish`: after any mix of
// live writes and deletes, relay kills, lost consumer state, ad hoc changes
// to a read model, and poison and stale records injected straight into the
// topic, `republish --all --tombstone-orphans` and a catch-up leave the read
// model equal to the source, deletions included.
//
// Cases are seeded: ECST_CONVERGENCE_SEED=N replays one; ECST_CONVERGENCE_CASES
// sets how many run (default 100 on kfake, 10 on a real broker).
func TestConvergence(t *testing.T) {
	cases, first, err := convergencePlan(os.Getenv, kafkatest.Real())
	if err != nil {
		t.Fatal(err)
	}
	broker := kafkatest.New(t)
	for i := range cases {
		seed := first + uint64(i)
		if !convergenceCase(t, broker, seed) {
			t.Fatalf("case with seed %d did not converge; replay it with ECST_CONVERGENCE_SEED=%d go test -run TestConvergence ./republish/", seed, seed)
		}
	}
}

// convergencePlan reads ECST_CONVERGENCE_CASES and ECST_CONVERGENCE_SEED:
// how many cases run, and the seed of the first (the next ones count up).
// A value that does not parse is an error: running no case, or another
// seed, would pass without checking what was asked.
func convergencePlan(getenv func(string) string, real bool) (cases int, first uint64, err error) {
	cases = 100
	if real {
		cases = 10
	}
	if s := getenv("ECST_CONVERGENCE_CASES"); s != "" {
		if cases, err = strconv.Atoi(s); err != nil || cases < 1 {
			return 0, 0, fmt.Errorf("ECST_CONVERGENCE_CASES=%q: want a number of cases, 1 or more", s)
		}
	}
	first, fromEnv, err := ecsttest.SeedFrom(getenv, "ECST_CONVERGENCE_SEED")
	if err != nil {
		return 0, 0, err
	}
	if fromEnv {
		cases = 1
	}
	return cases, first, nil
}

func TestConvergencePlan(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	if cases, _, err := convergencePlan(env(), false); err != nil || cases != 100 {
		t.Errorf("no variables on kfake: %d cases, %v; want 100", cases, err)
	}
	if cases, _, err := convergencePlan(env(), true); err != nil || cases != 10 {
		t.Errorf("no variables on a real broker: %d cases, %v; want 10", cases, err)
	}
	if cases, _, err := convergencePlan(env("ECST_CONVERGENCE_CASES", "7"), false); err != nil || cases != 7 {
		t.Errorf("ECST_CONVERGENCE_CASES=7: %d cases, %v", cases, err)
	}
	if cases, first, err := convergencePlan(env("ECST_CONVERGENCE_SEED", "42"), false); err != nil || cases != 1 || first != 42 {
		t.Errorf("ECST_CONVERGENCE_SEED=42: %d cases from seed %d, %v; want 1 from 42", cases, first, err)
	}
	for _, bad := range [][]string{
		{"ECST_CONVERGENCE_CASES", "ten"},
		{"ECST_CONVERGENCE_CASES", "0"},
		{"ECST_CONVERGENCE_CASES", "-3"},
		{"ECST_CONVERGENCE_SEED", "0x2a"},
		{"ECST_CONVERGENCE_SEED", "-1"},
	} {
		_, _, err := convergencePlan(env(bad...), false)
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: error %v, want one naming %s", bad[0], bad[1], err, bad[0])
		}
	}
}

func convergenceCase(t *testing.T, broker *kafkatest.Broker, seed uint64) (ok bool) {
	t.Helper()
	var log []string
	ok = t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		w := ecsttest.New(t, ecsttest.Options{Broker: broker})
		keys := ecsttest.Keys(6 + rng.IntN(10))
		const mirror = "model"
		inj, err := kgo.NewClient(w.Kafka()...)
		if err != nil {
			t.Fatal(err)
		}
		defer inj.Close()
		step := func(format string, args ...any) { log = append(log, fmt.Sprintf(format, args...)) }
		var stopRelay func() error
		for range 20 + rng.IntN(30) {
			k := keys[rng.IntN(len(keys))]
			switch x := rng.IntN(100); {
			case x < 40:
				step("upsert %s", k)
				if _, err := w.Upsert(ctx, k); err != nil {
					t.Fatal(err)
				}
			case x < 52:
				step("delete %s", k)
				if err := w.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			case x < 60: // the relay starts, or is killed mid-run
				if stopRelay == nil {
					step("relay start")
					stopRelay = w.StartRelay()
				} else {
					time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
					step("relay kill")
					if err := stopRelay(); err != nil {
						t.Fatal(err)
					}
					stopRelay = nil
				}
			case x < 68:
				step("mirror catch-up")
				if err := w.MirrorCatchUp(mirror); err != nil {
					t.Fatal(err)
				}
			case x < 72:
				step("mirror loses its state")
				w.Exec(`DROP TABLE IF EXISTS ` + mirror)
				w.Exec(`DELETE FROM ecst.consumer_offsets WHERE consumer = $1`, "mirror:"+mirror)
			case x < 80:
				step("ad hoc UPDATE and DELETE on the mirror")
				w.Exec(`CREATE TABLE IF NOT EXISTS ` + mirror + ` (_key text PRIMARY KEY, id text, version bigint, name text, email text, tier text, updated_at timestamptz)`)
				w.Exec(`UPDATE `+mirror+` SET name = 'corrupt' WHERE _key = $1`, k)
				w.Exec(`DELETE FROM `+mirror+` WHERE _key = $1`, keys[rng.IntN(len(keys))])
			case x < 88:
				step("poison record for %s", k)
				produce(t, inj, w.Topic, k, []byte{0, 0, 0, 0, 99, 1, 2, 3})
			default:
				step("stale record for %s", k)
				produce(t, inj, w.Topic, k, staleValue(t, w, k))
			}
		}
		if stopRelay != nil {
			if err := stopRelay(); err != nil {
				t.Fatal(err)
			}
		}
		step("republish --all --tombstone-orphans, relay --drain, mirror catch-up")
		if _, err := republish.Run(ctx, cfg(w), republish.Options{All: true, TombstoneOrphans: true}); err != nil {
			t.Fatal(err)
		}
		w.Drain()
		if err := w.MirrorCatchUp(mirror); err != nil {
			t.Fatal(err)
		}
		if d := w.TopicMatchesSource(); len(d) > 0 {
			t.Errorf("topic differs from the source: %s", strings.Join(d, "; "))
		}
		if d := w.MirrorMatchesSource(mirror); len(d) > 0 {
			t.Errorf("read model differs from the source on keys %v", d)
		}
	})
	if !ok {
		t.Logf("steps of seed %d:\n  %s", seed, strings.Join(log, "\n  "))
	}
	return ok
}

func produce(t *testing.T, cl *kgo.Client, topic, key string, value []byte) {
	t.Helper()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// staleValue is a well-formed state of key older than any it had.
func staleValue(t *testing.T, w *ecsttest.World, key string) []byte {
	b, err := avro.Marshal(w.Schema, map[string]any{"id": key, "version": int64(0), "name": "stale", "email": "stale@example.com",
		"tier": nil, "updated_at": time.UnixMicro(0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	return append(schemas.AppendWire(nil, w.SchemaID), b...)
}
