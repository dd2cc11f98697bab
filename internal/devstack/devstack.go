// Package devstack runs ecst's whole backing stack in one process, for
// `ecst dev` and `ecst demo`: a Kafka broker (kfake, in-process), a
// Confluent-compatible Schema Registry (srfake, served over HTTP) and a
// PostgreSQL cluster (real server binaries, started as a child process).
//
// With Options.DataDir set, everything persists under that directory and a
// later Start on it finds its topics, records, committed offsets and
// transactions, its schemas under the same ids, and its database rows.
// Without it, everything is thrown away by Close.
//
//	st, err := devstack.Start(ctx, devstack.Options{DataDir: ".ecst-dev"})
//	if err != nil { ... }
//	defer st.Close()
//	// st.DatabaseURL, st.Brokers, st.RegistryURL
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ecst-io/ecst/internal/pgcluster"
)

// Options configure a stack. The zero value is a throwaway stack on free
// ports.
type Options struct {
	// DataDir keeps the stack's state (kafka/, registry/, postgres/) so
	// that it survives a restart. Empty: nothing is written to disk but
	// PostgreSQL's temporary cluster, which Close removes. The directory
	// is created if missing; an existing one must be empty or a previous
	// stack's, and only one stack at a time may use it.
	DataDir string
	// Ports on 127.0.0.1; 0 picks a free one. A port in use fails Start
	// with a *PortInUseError.
	KafkaPort    int
	RegistryPort int
	PostgresPort int
	// Logger receives the stack's own logs and kfake's warnings; nil
	// discards them.
	Logger *slog.Logger
}

// Stack is a running stack. Its fields are set by Start and read-only.
type Stack struct {
	// DatabaseURL connects to the postgres database as the superuser
	// postgres (no password): ECST_DATABASE_URL.
	DatabaseURL string
	// Brokers are the Kafka bootstrap addresses: ECST_BROKERS.
	Brokers []string
	// RegistryURL is the Schema Registry's base URL: ECST_SCHEMA_REGISTRY_URL.
	RegistryURL string
	// Kafka is the in-process broker, for fault injection and inspection.
	Kafka *kfake.Cluster
	// Postgres is the server; its PID and Dir show what Close stops.
	Postgres *pgcluster.Cluster

	dataDir  string
	log      *slog.Logger
	lock     *os.File
	journal  *journal
	httpSrv  *http.Server
	httpDone chan struct{}
	closed   bool
}

// Env is the stack's connection settings as ECST_* variables, in the order
// `ecst dev --env` prints them.
func (s *Stack) Env() [][2]string {
	return [][2]string{
		{"ECST_DATABASE_URL", s.DatabaseURL},
		{"ECST_BROKERS", strings.Join(s.Brokers, ",")},
		{"ECST_SCHEMA_REGISTRY_URL", s.RegistryURL},
	}
}

// DataDir is the directory the stack persists to, "" for a throwaway one.
func (s *Stack) DataDir() string { return s.dataDir }

// PortInUseError means a port asked for in Options is taken.
type PortInUseError struct {
	Service string // "kafka", "registry" or "postgres"
	Port    int
	Err     error
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("%s: port %d on 127.0.0.1 is already in use (%v)", e.Service, e.Port, e.Err)
}

func (e *PortInUseError) Unwrap() error { return e.Err }

// ErrDataDirInUse means another stack holds the data directory.
var ErrDataDirInUse = errors.New("data directory is in use by another ecst dev")

// lockName marks a directory as a stack's data directory and is the lock
// that keeps two stacks off it: kfake and PostgreSQL both assume they are
// alone on their files.
const lockName = "ecst-dev.lock"

// Start starts the stack and returns once every part accepts connections.
// On error, whatever had started is stopped again. ctx bounds the start-up
// only; the stack runs until Close.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Stack{log: log}
	ok := false
	var pgCh chan pgResult // PostgreSQL's start, while it is pending
	defer func() {
		if ok {
			return
		}
		if pgCh != nil { // collect the cluster so that Close stops it
			s.Postgres = (<-pgCh).c
		}
		_ = s.Close()
	}()

	var kafkaDir, journalPath, pgDir string
	if opts.DataDir != "" {
		dir, err := filepath.Abs(opts.DataDir)
		if err != nil {
			return nil, err
		}
		if err := s.claim(dir); err != nil {
			return nil, err
		}
		s.dataDir = dir
		kafkaDir = filepath.Join(dir, "kafka")
		pgDir = filepath.Join(dir, "postgres")
		if err := os.MkdirAll(filepath.Join(dir, "registry"), 0o755); err != nil {
			return nil, err
		}
		journalPath = filepath.Join(dir, "registry", "journal.jsonl")
	}

	// Check the ports that are cheap to check before the slow part, so
	// that a taken port fails in milliseconds, not after initdb.
	for _, p := range []struct {
		service string
		port    int
	}{{"kafka", opts.KafkaPort}, {"postgres", opts.PostgresPort}} {
		if p.port == 0 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
		if err != nil {
			return nil, &PortInUseError{Service: p.service, Port: p.port, Err: err}
		}
		l.Close()
	}
	regLn, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(opts.RegistryPort))
	if err != nil {
		return nil, &PortInUseError{Service: "registry", Port: opts.RegistryPort, Err: err}
	}

	// PostgreSQL takes a second or two (initdb the first time); start it
	// while the in-process parts load.
	pgCtx := ctx
	if pgDir != "" {
		// An initdb killed half-way would leave the data directory with a
		// cluster that never starts: let a kept cluster finish starting,
		// and honour ctx once it has.
		pgCtx = context.WithoutCancel(ctx)
	}
	pgCh = make(chan pgResult, 1)
	go func() {
		c, err := pgcluster.Start(pgCtx, pgcluster.Options{Dir: pgDir, Port: opts.PostgresPort})
		pgCh <- pgResult{c, err}
	}()

	if err := s.startRegistry(regLn, journalPath); err != nil {
		return nil, err
	}
	if err := s.startKafka(kafkaDir, opts.KafkaPort); err != nil {
		return nil, err
	}
	pg := <-pgCh
	pgCh = nil
	if pg.err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", pg.err)
	}
	s.Postgres = pg.c
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.DatabaseURL = s.Postgres.URL("postgres")
	ok = true
	log.Info("dev stack ready", "kafka", strings.Join(s.Brokers, ","), "registry", s.RegistryURL,
		"postgres", fmt.Sprintf("127.0.0.1:%d", s.Postgres.Port()), "data_dir", s.dataDir)
	return s, nil
}

type pgResult struct {
	c   *pgcluster.Cluster
	err error
}

// claim makes dir the stack's data directory: created if missing, refused
// if it holds something else or another stack holds it.
func (s *Stack) claim(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read data directory: %w", err)
	}
	ours := len(ents) == 0
	for _, e := range ents {
		if e.Name() == lockName {
			ours = true
		}
	}
	if !ours {
		return fmt.Errorf("data directory %s is not empty and is not an ecst dev data directory (no %s): choose an empty or new directory", dir, lockName)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s (pid %s)", ErrDataDirInUse, dir, strings.TrimSpace(string(holder)))
		}
		return fmt.Errorf("lock data directory: %w", err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	s.lock = f
	return nil
}

func (s *Stack) startRegistry(ln net.Listener, journalPath string) error {
	j, err := openJournal(journalPath, s.log)
	if err != nil {
		ln.Close()
		return err
	}
	s.journal = j
	s.httpSrv = &http.Server{Handler: j, ReadHeaderTimeout: 10 * time.Second}
	s.httpDone = make(chan struct{})
	go func() {
		defer close(s.httpDone)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("schema registry stopped", "err", err)
		}
	}()
	s.RegistryURL = "http://" + ln.Addr().String()
	return nil
}

func (s *Stack) startKafka(dir string, port int) error {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.WithLogger(kfakeLogger{s.log})}
	if port != 0 {
		opts = append(opts, kfake.Ports(port))
	}
	if dir != "" {
		opts = append(opts, kfake.DataDir(dir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return &PortInUseError{Service: "kafka", Port: port, Err: err}
		}
		return fmt.Errorf("start Kafka (kfake): %w", err)
	}
	s.Kafka = c
	s.Brokers = c.ListenAddrs()
	return nil
}

// Close stops everything Start started: the registry, the broker (which
// writes its state to the data directory) and the PostgreSQL server (fast
// shutdown), then removes what was temporary. It is safe to call twice.
func (s *Stack) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			_ = s.httpSrv.Close()
		}
		cancel()
		<-s.httpDone
	}
	if s.journal != nil {
		if err := s.journal.close(); err != nil {
			errs = append(errs, fmt.Errorf("close registry journal: %w", err))
		}
	}
	if s.Kafka != nil {
		s.Kafka.Close() // persists its state to the data directory
	}
	if s.Postgres != nil {
		if err := s.Postgres.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop PostgreSQL: %w", err))
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// kfakeLogger passes kfake's warnings and errors on; its info level logs
// every request.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error("kafka: " + fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		l.log.Warn("kafka: " + fmt.Sprintf(msg, args...))
	}
}
