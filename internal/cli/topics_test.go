package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
)

func topicsConfig(t *testing.T, topic string, partitions int, extra string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "schemas"), 0o755)
	os.WriteFile(filepath.Join(dir, "schemas", "customer.avsc"), []byte(customers.Schema), 0o644)
	p := filepath.Join(dir, "ecst.yaml")
	os.WriteFile(p, []byte(fmt.Sprintf(`service: s
entities:
  customer:
    topic: %s
    schema: schemas/customer.avsc
    partitions: %d
    replication_factor: 1
%s`, topic, partitions, extra)), 0o644)
	return p
}

func TestTopicsApply(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t)
	topic := fmt.Sprintf("cli-topics-%d", time.Now().UnixNano())
	env := map[string]string{"ECST_BROKERS": strings.Join(b.Seeds, ",")}
	cfg := topicsConfig(t, topic, 3, "")

	r := run(t, env, "--config", cfg, "topics", "apply", "--dry-run")
	if r.code != 0 || !strings.Contains(r.out, "would create") {
		t.Fatalf("dry run: code %d\n%s%s", r.code, r.out, r.err)
	}
	ctx := context.Background()
	// A client per look: kgo caches metadata, and a cached "unknown topic"
	// would outlive the topic's creation.
	admin := func() *kadm.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Seeds...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return kadm.NewClient(cl)
	}
	if td, _ := admin().ListTopics(ctx, topic); td.Has(topic) {
		t.Fatal("--dry-run created the topic")
	}
	adm := admin()

	r = run(t, env, "--config", cfg, "topics", "apply")
	if r.code != 0 || !regexp.MustCompile(topic+`\s+\(topic\)\s+3 partitions, compacted\s+-\s+create`).MatchString(r.out) {
		t.Fatalf("create: code %d\n%s%s", r.code, r.out, r.err)
	}
	// The broker's view of its topic configs: on a real KRaft broker a
	// change reaches it a moment after the controller acknowledged it.
	configs := func() map[string]string {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range rcs[0].Configs {
			if c.Value != nil {
				got[c.Key] = *c.Value
			}
		}
		return got
	}
	got := configs()
	if got["cleanup.policy"] != "compact" || got["delete.retention.ms"] != "604800000" || got["segment.ms"] != "86400000" {
		t.Fatalf("created topic configs = %v", got)
	}
	r = run(t, env, "--config", cfg, "topics", "apply")
	if r.code != 0 || !strings.Contains(r.out, "all topics match") {
		t.Fatalf("second apply: code %d\n%s%s", r.code, r.out, r.err)
	}

	// Drift: someone changed a config by hand.
	v := "3600000"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &v}}, topic); err != nil {
		t.Fatal(err)
	}
	if err := wait.Until(ctx, 10*time.Second, 10*time.Millisecond, "the broker to show the changed config", func() (bool, error) {
		return configs()["delete.retention.ms"] == v, nil
	}); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "--config", cfg, "topics", "apply")
	if r.code != cli.ExitProblem || !regexp.MustCompile(`delete.retention.ms\s+604800000\s+3600000\s+drift`).MatchString(r.out) || !strings.Contains(r.err, "--fix") {
		t.Fatalf("drift: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "topics", "apply", "--fix")
	if r.code != 0 || !strings.Contains(r.out, "fix") {
		t.Fatalf("fix: code %d\n%s%s", r.code, r.out, r.err)
	}
	if err := wait.Until(ctx, 10*time.Second, 10*time.Millisecond, "the broker to show the fixed config", func() (bool, error) {
		return configs()["delete.retention.ms"] == "604800000", nil
	}); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "--config", cfg, "topics", "apply")
	if r.code != 0 {
		t.Fatalf("after fix: code %d\n%s%s", r.code, r.out, r.err)
	}

	// A partition change is refused, with the reason, and not made.
	r = run(t, env, "--config", topicsConfig(t, topic, 6, ""), "topics", "apply", "--fix")
	if r.code != cli.ExitProblem || !strings.Contains(r.out, "breaks per-key order") {
		t.Fatalf("partitions: code %d\n%s%s", r.code, r.out, r.err)
	}
	td, err := admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[topic].Partitions); n != 3 {
		t.Fatalf("topic has %d partitions after a refused change (%+v)", n, td)
	}

	// A non-compacting cleanup policy is a config error.
	r = run(t, env, "--config", topicsConfig(t, topic, 3, "    topic_config: {cleanup.policy: delete}\n"), "topics", "apply")
	if r.code != cli.ExitError || !strings.Contains(r.err, "must be compacted") {
		t.Fatalf("cleanup.policy=delete: code %d\n%s%s", r.code, r.out, r.err)
	}
}

func TestRelayDrainCommand(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t)
	topic := fmt.Sprintf("cli-relay-%d", time.Now().UnixNano())
	dbURL := newMigratedDB(t)
	env := map[string]string{"ECST_BROKERS": strings.Join(b.Seeds, ","), "ECST_DATABASE_URL": dbURL, "ECST_METRICS_ADDR": "off"}
	cfg := topicsConfig(t, topic, 3, "")
	r := run(t, env, "--config", cfg, "relay", "--drain")
	// The command it suggests carries the --config it was given.
	if r.code != cli.ExitError || !strings.Contains(r.err, "`ecst --config "+cfg+" topics apply`") {
		t.Fatalf("relay before topics exist: code %d\n%s", r.code, r.err)
	}
	if r := run(t, env, "--config", cfg, "topics", "apply"); r.code != 0 {
		t.Fatal(r.err)
	}
	r = run(t, env, "--config", cfg, "relay", "--drain")
	if r.code != 0 || !strings.Contains(r.out, "outbox drained") {
		t.Fatalf("drain: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, env, "--config", cfg, "relay", "--drain", "--shards", "7")
	if r.code != cli.ExitError || !strings.Contains(r.err, "shard 7") {
		t.Fatalf("bad shard: code %d\n%s", r.code, r.err)
	}
}

// TestRelayServesOps runs `ecst relay` until cancelled and checks its
// operational endpoints, then that it stops cleanly with exit 0.
func TestRelayServesOps(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t)
	topic := fmt.Sprintf("cli-ops-%d", time.Now().UnixNano())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := map[string]string{"ECST_BROKERS": strings.Join(b.Seeds, ","), "ECST_DATABASE_URL": newMigratedDB(t), "ECST_METRICS_ADDR": addr}
	cfg := topicsConfig(t, topic, 3, "")
	if r := run(t, env, "--config", cfg, "topics", "apply"); r.code != 0 {
		t.Fatal(r.err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb testkit.Buffer
	go func() {
		done <- cli.Run(ctx, []string{"--config", cfg, "relay"}, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb,
			Env: func(k string) string { return env[k] }})
	}()
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("relay log:\n%s", errb.String())
		}
	})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	wait.Eventually(t, 30*time.Second, "the relay to be ready", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })
	if code, body := get("/healthz"); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	// Leadership comes after readiness; the checks below say what is missing.
	_ = wait.Until(ctx, 30*time.Second, 20*time.Millisecond, "the relay to lead", func() (bool, error) {
		_, body := get("/metrics")
		return strings.Contains(body, `ecst_relay_leader{shard="0"} 1`), nil
	})
	code, body := get("/metrics")
	for _, want := range []string{`ecst_relay_leader{shard="0"} 1`, "ecst_relay_batch_duration_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("relay exited %d on cancel:\n%s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not stop")
	}
	if code, _ := get("/healthz"); code != 0 {
		t.Error("the ops server outlived the relay")
	}
}
