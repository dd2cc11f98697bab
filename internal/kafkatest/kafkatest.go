// Package kafkatest gives tests a Kafka broker: an in-process kfake cluster
// by default, or the real Apache Kafka broker named by ECST_TEST_BROKERS
// (make test-kafka starts one with scripts/kafka.sh). The same tests run
// against both.
package kafkatest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
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

	mu      sync.Mutex
	dataDir string
	opts    []kfake.Opt
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
		return &Broker{Seeds: strings.Split(seeds, ",")}
	}
	return newFake(tb,
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", SASLUser, SASLPassword),
		kfake.Superuser("SCRAM-SHA-256", SASLUser, SASLPassword),
		kfake.Superuser("SCRAM-SHA-512", SASLUser, SASLPassword),
	)
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
