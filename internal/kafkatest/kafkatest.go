// Package kafkatest gives tests a Kafka broker: an in-process kfake cluster
// by default, or the real Apache Kafka broker named by ECST_TEST_BROKERS
// (make test-kafka starts one with scripts/kafka.sh). The same tests run
// against both.
package kafkatest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ecst-io/ecst/internal/wait"
)

// SASL credentials of the test brokers: scripts/kafka.sh creates this user
// for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
const (
	SASLUser     = "ecst"
	SASLPassword = "ecst-secret"
)

// Broker is a running broker for one test.
type Broker struct {
	Seeds []string
	// Fake is the in-process cluster, nil against a real broker. Tests
	// that inject faults with ControlKey need it.
	Fake *kfake.Cluster

	// SASL: the broker requires SASL, and Opts authenticate as SASLUser.
	SASL bool

	mu      sync.Mutex
	dataDir string
	opts    []kfake.Opt
}

// Opts are the client options that reach the broker: its seeds, and
// SCRAM-SHA-512 credentials when it requires SASL.
func (b *Broker) Opts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(b.Seeds...)}
	if b.SASL {
		opts = append(opts, kgo.SASL(scram.Auth{User: SASLUser, Pass: SASLPassword}.AsSha512Mechanism()))
	}
	return opts
}

// CreateTopic creates topic on the broker, failing the test if it cannot:
// partitions, replication factor 1, and configs (nil: the broker's
// defaults).
func (b *Broker) CreateTopic(tb testing.TB, topic string, partitions int, configs map[string]string) {
	tb.Helper()
	cl, err := kgo.NewClient(b.Opts()...)
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := CreateTopic(ctx, cl, topic, partitions, configs); err != nil {
		tb.Fatal(err)
	}
}

// AwaitReadable waits until read_committed consumers can read all that was
// committed to topic so far: its last stable offsets have reached its end
// offsets. A real broker writes a transaction's markers after the commit
// returns (kfake writes them with it), so a reader that starts at once may
// take an older offset for the end.
func AwaitReadable(tb testing.TB, cl *kgo.Client, topic string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		tb.Fatalf("end offsets of %s: %v", topic, err)
	}
	wait.Eventually(tb, time.Minute, "the last stable offsets of "+topic+" to reach its end", func() bool {
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil || stable.Error() != nil {
			return false
		}
		readable := true
		ends.Each(func(e kadm.ListedOffset) {
			if s, ok := stable.Lookup(e.Topic, e.Partition); !ok || s.Offset < e.Offset {
				readable = false
			}
		})
		return readable
	})
}

// CreateTopic creates topic with cl: partitions, replication factor 1 (the
// test brokers have one node), and configs (nil: the broker's defaults).
// Every test that needs a topic creates it here, or through Broker's
// CreateTopic.
func CreateTopic(ctx context.Context, cl *kgo.Client, topic string, partitions int, configs map[string]string) error {
	cfgs := make(map[string]*string, len(configs))
	for k, v := range configs {
		cfgs[k] = &v
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), 1, cfgs, topic) //nolint:gosec // a test's small count
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// NewRestartable is New with a broker that Restart can stop and start on
// the same data: kfake persisting to a directory, or the real broker.
func NewRestartable(tb testing.TB) *Broker {
	tb.Helper()
	if Real() {
		return New(tb)
	}
	dir := tb.TempDir()
	b := newFake(tb, kfake.DataDir(dir))
	b.dataDir = dir
	return b
}

// Restart stops the broker and starts it again on the same port and data.
// Clients see their connections drop and must reconnect.
func (b *Broker) Restart(tb testing.TB) {
	tb.Helper()
	if b.Fake == nil {
		script := filepath.Join(repoRoot(), "scripts", "kafka.sh")
		out, err := exec.Command(script, "restart-broker").CombinedOutput()
		if err != nil {
			tb.Fatalf("restart the real broker: %v\n%s", err, out)
		}
		return
	}
	if b.dataDir == "" {
		tb.Fatal("kafkatest: Restart needs a broker from NewRestartable")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, portStr, _ := net.SplitHostPort(b.Seeds[0])
	port, _ := strconv.Atoi(portStr)
	b.Fake.Close()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(b.dataDir)}, b.opts...)...)
	if err != nil {
		tb.Fatalf("kfake restart: %v", err)
	}
	b.Fake = c
	tb.Cleanup(c.Close)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Real reports whether the tests run against a real broker.
func Real() bool { return os.Getenv("ECST_TEST_BROKERS") != "" }

// New returns the real broker, or a fresh kfake cluster closed when the
// test ends.
func New(tb testing.TB, opts ...kfake.Opt) *Broker {
	tb.Helper()
	if seeds := os.Getenv("ECST_TEST_BROKERS"); seeds != "" {
		return &Broker{Seeds: strings.Split(seeds, ",")}
	}
	return newFake(tb, opts...)
}

// NewSASL returns a broker that requires SASL, with SASLUser known to it
// for every mechanism: the real broker's SASL listener
// (ECST_TEST_SASL_BROKERS), or a kfake cluster with SASL enabled.
func NewSASL(tb testing.TB) *Broker {
	tb.Helper()
	if Real() {
		seeds := os.Getenv("ECST_TEST_SASL_BROKERS")
		if seeds == "" {
			tb.Fatal("ECST_TEST_BROKERS is set but ECST_TEST_SASL_BROKERS is not: start the broker with scripts/kafka.sh, which opens both")
		}
		return &Broker{Seeds: strings.Split(seeds, ","), SASL: true}
	}
	b := newFake(tb,
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", SASLUser, SASLPassword),
		kfake.Superuser("SCRAM-SHA-256", SASLUser, SASLPassword),
		kfake.Superuser("SCRAM-SHA-512", SASLUser, SASLPassword),
	)
	b.SASL = true
	return b
}

func newFake(tb testing.TB, opts ...kfake.Opt) *Broker {
	tb.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		tb.Fatalf("kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return &Broker{Seeds: c.ListenAddrs(), Fake: c, opts: opts}
}
