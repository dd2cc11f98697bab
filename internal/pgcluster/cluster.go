// Package pgcluster starts and stops throwaway PostgreSQL clusters from the
// server binaries on this machine: for the test harness, the embedded dev
// stack and the demo. When running as root it runs initdb and the server as
// the postgres user, since initdb refuses root.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries means the PostgreSQL server binaries are not installed.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: run `make setup` (apt-get install -y postgresql-15) or set ECST_PG_BINDIR")

// Options configure a cluster.
type Options struct {
	// Dir is the data directory. Empty means a fresh temporary directory,
	// removed by Stop. An existing initialized Dir is reused (ecst dev).
	Dir string
	// Port to listen on, on 127.0.0.1; 0 picks a free one.
	Port int
	// Durable keeps fsync and synchronous_commit on, as in production.
	// Tests leave it off for speed; benchmarks turn it on.
	Durable bool
	// Logical sets wal_level = logical, with room for replication slots
	// and WAL senders: the WAL transport (outbox.transport: wal) streams a
	// logical replication slot. It costs a little more WAL per write.
	Logical bool
	// Settings are extra server settings (name → value); they override
	// the ones the options above imply.
	Settings map[string]string
}

// Cluster is a running PostgreSQL server.
type Cluster struct {
	dir     string
	port    int
	bindir  string
	temp    bool
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	cred    *syscall.Credential
	opts    Options
}

const tempPrefix = "ecst-pg-"

// Start initializes (if needed) and starts a cluster, and returns once it
// accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	sweepStale()
	c := &Cluster{bindir: bindir, dir: opts.Dir, port: opts.Port, opts: opts}
	if os.Geteuid() == 0 {
		if c.cred, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", tempPrefix); err != nil {
			return nil, err
		}
		c.temp = true
		// The owner file lets a later run remove this cluster if the
		// process that started it dies without stopping it.
		if err := os.WriteFile(filepath.Join(c.dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return nil, err
		}
	}
	if !c.temp {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, err
		}
		if c.cred != nil {
			if err := reachable(c.dir, c.cred); err != nil {
				return nil, err
			}
		}
	}
	data := filepath.Join(c.dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if err := c.initdb(ctx, data); err != nil {
			c.cleanup()
			return nil, err
		}
	}
	if err := c.start(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	return c, nil
}

// BinDir finds the server binaries: $ECST_PG_BINDIR, then initdb on PATH,
// then the newest /usr/lib/postgresql/*/bin (Debian's layout).
func BinDir() (string, error) {
	if d := os.Getenv("ECST_PG_BINDIR"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func version(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so initdb must run as the postgres user, which does not exist: %w (installing postgresql-15 creates it)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil //nolint:gosec // ids fit
}

// reachable checks that the postgres user can enter every directory above
// dir: initdb and the server run as that user and would fail later with a
// less helpful "permission denied".
func reachable(dir string, cred *syscall.Credential) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		ok := perm&0o001 != 0 ||
			(st != nil && st.Uid == cred.Uid && perm&0o100 != 0) ||
			(st != nil && st.Gid == cred.Gid && perm&0o010 != 0)
		if !ok {
			return fmt.Errorf("running as root, PostgreSQL runs as the postgres user, which cannot enter %s (mode %v) to reach %s: use a directory it can reach, or run chmod o+x %s", d, perm, abs, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bindir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context, data string) error {
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("give %s to the postgres user: %w", c.dir, err)
		}
	}
	cmd := c.command(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	if c.port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		c.port = p
	}
	settings := map[string]string{
		"listen_addresses":          "127.0.0.1",
		"port":                      strconv.Itoa(c.port),
		"unix_socket_directories":   filepath.Join(c.dir, "data"),
		"max_connections":           "200",
		"shared_buffers":            "128MB",
		"max_locks_per_transaction": "256",
	}
	if !c.opts.Durable {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	if c.opts.Logical {
		settings["wal_level"] = "logical"
		settings["max_replication_slots"] = "64"
		settings["max_wal_senders"] = "64"
		if !c.opts.Durable {
			// Logical decoding only reads flushed WAL, and without
			// synchronous_commit a commit waits for the WAL writer's next
			// round (up to three wal_writer_delay, 200ms by default).
			settings["wal_writer_delay"] = "10ms"
		}
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", filepath.Join(c.dir, "data")}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	logf, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the server outlives the start-up context.
	cmd := c.command(context.Background(), "postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// If this process dies without stopping the server, the kernel tells
	// the postmaster, which then shuts down at once (SIGQUIT).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	return c.waitReady(ctx)
}

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited during start-up (%v); its log:\n%s", c.exitErr, c.logTail())
		case <-ctx.Done():
			c.kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.kill()
			return fmt.Errorf("postgres did not accept connections within 60s; its log:\n%s", c.logTail())
		}
	}
}

// URL is a connection URL for database db as the postgres superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// PID is the postmaster's process id, 0 when stopped.
func (c *Cluster) PID() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Port is the port the server listens on.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's directory (data directory and log).
func (c *Cluster) Dir() string { return c.dir }

// Restart stops the server (fast shutdown, which disconnects every client)
// and starts it again on the same port and data: for tests of database
// restarts.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.stopServer(); err != nil {
		return err
	}
	return c.start(ctx)
}

// Stop shuts the server down and, for a temporary cluster, removes its
// directory.
func (c *Cluster) Stop() error {
	err := c.stopServer()
	c.cleanup()
	return err
}

func (c *Cluster) stopServer() error {
	if c.cmd == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown: abort transactions, exit.
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.kill()
	}
	c.cmd = nil
	return nil
}

func (c *Cluster) kill() {
	if c.cmd != nil {
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

func (c *Cluster) cleanup() {
	if c.temp {
		_ = os.RemoveAll(c.dir)
	}
}

func (c *Cluster) logPath() string { return filepath.Join(c.dir, "postgres.log") }

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath())
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sweepStale removes temporary clusters whose owning process is gone, and
// stops their servers if Pdeathsig did not.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(pid) {
			continue
		}
		if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			if spid, err := strconv.Atoi(strings.SplitN(string(pm), "\n", 2)[0]); err == nil && alive(spid) {
				_ = syscall.Kill(spid, syscall.SIGQUIT)
			}
		}
		_ = os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
