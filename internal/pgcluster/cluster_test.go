package pgcluster_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/testkit"
	"github.com/ecst-io/ecst/internal/wait"
)

func TestMain(m *testing.M) {
	if os.Getenv("ECST_PGCLUSTER_CHILD") == "1" {
		child()
		return
	}
	goleak.VerifyTestMain(m)
}

// child starts a cluster, says where it is, and waits to be killed.
func child() {
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Printf("%d %s\n", c.PID(), c.Dir())
	select {}
}

func TestStartRestartStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn := keep(t, c, 42)
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a connection survived the restart")
	}
	conn.Close(ctx)
	if x, err := kept(t, c); err != nil || x != 42 {
		t.Fatalf("data after restart: %d, %v", x, err)
	}
	dir := c.Dir()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary cluster dir %s left behind (%v)", dir, err)
	}
}

// TestLogical: a Logical cluster can create and stream a logical
// replication slot, which the WAL transport needs.
func TestLogical(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logical: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop() //nolint:errcheck
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var level string
	var slots int
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int").Scan(&level, &slots); err != nil {
		t.Fatal(err)
	}
	if level != "logical" || slots < 10 {
		t.Fatalf("wal_level %s, max_replication_slots %d: want logical and room for a slot per test", level, slots)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')"); err != nil {
		t.Fatalf("create a logical slot: %v", err)
	}
}

// TestKilledOwnerLeavesNothingRunning: a test binary killed with SIGKILL
// cannot stop its cluster; the server must go anyway, and the next start
// removes what is left on disk.
func TestKilledOwnerLeavesNothingRunning(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ECST_PGCLUSTER_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var dir string
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscanf(line, "%d %s", &pid, &dir); err != nil {
		t.Fatalf("child said %q", line)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := wait.Until(context.Background(), 30*time.Second, 50*time.Millisecond, fmt.Sprintf("postmaster %d to stop after its owner was killed", pid),
		func() (bool, error) { return syscall.Kill(pid, 0) != nil, nil }); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal(err)
	}
	// The next start sweeps the dead owner's directory.
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop() //nolint:errcheck
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dead owner's cluster dir %s not swept (%v)", dir, err)
	}
}

// TestReuseDir: a cluster started on a directory of the caller's keeps its
// data across a stop and a start (ecst dev --data-dir), and Stop leaves the
// directory in place.
func TestReuseDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := testkit.OpenTempDir(t)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	keep(t, c, 7).Close(ctx)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c, err = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop() //nolint:errcheck
	if x, err := kept(t, c); err != nil || x != 7 {
		t.Fatalf("data after stop and start: %d, %v", x, err)
	}
}

// keep writes x into a table kept of c's postgres database, and returns
// the connection it used; the caller closes it.
func keep(t *testing.T, c *pgcluster.Cluster, x int) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES ($1)", x); err != nil {
		t.Fatal(err)
	}
	return conn
}

// kept reads back, on a new connection, what keep wrote.
func kept(t *testing.T, c *pgcluster.Cluster) (x int, err error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x)
	return x, err
}

// TestUnreachableDirAsRoot: as root the server runs as postgres, which
// must be able to enter the directory's parents; the error says which one.
func TestUnreachableDirAsRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	dir := testkit.OpenTempDir(t)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: filepath.Join(dir, "pg")})
	if err == nil || !strings.Contains(err.Error(), "cannot enter "+dir) {
		t.Fatalf("err = %v, want one naming %s", err, dir)
	}
}
