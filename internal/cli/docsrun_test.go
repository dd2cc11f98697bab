package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/internal/testkit"
)

// The commands the docs show run here, as written: a documented command
// that breaks fails a test.

// mdBlock is one fenced block of a markdown file.
type mdBlock struct {
	lang    string // the info string's first word: sh, yaml, ...
	file    string // from a preceding <!-- file: NAME --> line, if any
	section string // the last ## heading before it
	text    string
}

// mdBlocks reads the fenced blocks of a markdown file.
func mdBlocks(t *testing.T, path string) []mdBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks        []mdBlock
		cur           *mdBlock
		section, file string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "```"):
			lang, _, _ := strings.Cut(strings.TrimPrefix(line, "```"), " ")
			cur = &mdBlock{lang: lang, file: file, section: section}
			file = ""
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case strings.HasPrefix(line, "<!-- file: "):
			file = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- file: "), " -->")
		case strings.TrimSpace(line) != "":
			file = "" // a marker names the block right after it only
		}
	}
	if cur != nil {
		t.Fatalf("%s: a fenced block is never closed", path)
	}
	return blocks
}

// sectionBlocks are the blocks of one ## section (matched by prefix) in
// one of the languages given.
func sectionBlocks(t *testing.T, path, section string, langs ...string) []mdBlock {
	t.Helper()
	var out []mdBlock
	for _, b := range mdBlocks(t, path) {
		if strings.HasPrefix(b.section, section) && (len(langs) == 0 || containsString(langs, b.lang)) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no %v blocks in section %q", path, langs, section)
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// devDoc is docs/dev.md, read from the tree.
var devDoc = filepath.Join("..", "..", "docs", "dev.md")

// documentedDevWait is the block docs/dev.md gives scripts to start ecst
// dev and wait for it.
func documentedDevWait(t *testing.T) string {
	t.Helper()
	return sectionBlocks(t, devDoc, "In scripts", "sh")[0].text
}

// ecstOnPath builds the ecst binary from this tree and returns a PATH with
// it first; the PostgreSQL binaries (psql) come last.
func ecstOnPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "ecst"), "../../cmd/ecst").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/ecst: %v\n%s", err, out)
	}
	path := dir + string(os.PathListSeparator) + os.Getenv("PATH")
	if bin, err := pgcluster.BinDir(); err == nil {
		path += string(os.PathListSeparator) + bin
	}
	return path
}

// runScript runs script with bash in dir, in a process group of its own
// that is killed whole if ctx ends (and at the end of the test, in case a
// background ecst dev outlived the script).
func runScript(ctx context.Context, t *testing.T, dir, script string, env ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Once bash is gone its children keep the pipes open; stop waiting
	// for them after a while rather than hang on a stray process.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) })
	err = cmd.Wait()
	return out.String(), errb.String(), err
}

// TestDocumentedDevWait runs the wait form docs/dev.md gives scripts, as
// written: it ends once ecst dev is ready, with the settings loaded, and it
// ends (exit 1) when ecst dev cannot start, instead of waiting forever.
func TestDocumentedDevWait(t *testing.T) {
	t.Parallel()
	wait := documentedDevWait(t)
	path := ecstOnPath(t)

	// The README and `ecst dev --help` show the same form.
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```sh\n"+wait+"```") {
		t.Errorf("README.md does not show docs/dev.md's wait form:\n%s", wait)
	}
	help := run(t, nil, "dev", "--help").out
	for _, line := range strings.Split(strings.TrimSpace(wait), "\n") {
		if !strings.Contains(help, "\n  "+line+"\n") {
			t.Errorf("ecst dev --help lacks the line %q of docs/dev.md's wait form", line)
		}
	}
	for _, doc := range []string{string(readme), help, wait} {
		if strings.Contains(doc, "wc -l") {
			t.Error("a wait that never ends when ecst dev fails (wc -l) is still documented")
		}
	}

	t.Run("ready", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		dir := testkit.OpenTempDir(t)
		script := wait + `
printf '%s\n' "$ECST_DATABASE_URL" "$ECST_BROKERS" "$ECST_SCHEMA_REGISTRY_URL"
kill $pid
wait $pid
echo "ecst dev exit $?"
[ -e dev.env ] && echo "dev.env left behind"
exit 0
`
		out, errOut, err := runScript(ctx, t, dir, script, "PATH="+path)
		if err != nil {
			t.Fatalf("script: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "postgres://") || !strings.HasPrefix(lines[1], "127.0.0.1:") ||
			!strings.HasPrefix(lines[2], "http://127.0.0.1:") || lines[3] != "ecst dev exit 0" {
			t.Fatalf("want the three settings, then exit 0 and dev.env removed; stdout:\n%s\nstderr:\n%s", out, errOut)
		}
	})

	t.Run("fails", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dir := testkit.OpenTempDir(t)
		// A data directory that is not one: ecst dev refuses it.
		if err := os.MkdirAll(filepath.Join(dir, ".ecst-dev"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".ecst-dev", "notes.txt"), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, errOut, err := runScript(ctx, t, dir, wait+"echo 'the wait ended as if ecst dev were ready'\n", "PATH="+path)
		if ctx.Err() != nil {
			t.Fatalf("the documented wait still spins after %v with ecst dev failed; stderr:\n%s", time.Since(start).Round(time.Second), errOut)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("script: %v, want exit 1\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		if !strings.Contains(errOut, "is not an ecst dev data directory") {
			t.Errorf("stderr does not say why ecst dev failed:\n%s", errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "dev.env")); !os.IsNotExist(err) {
			t.Errorf("dev.env written by a stack that never started (%v)", err)
		}
	})
}

// TestWalkthrough runs docs/dev.md's "Your own entity in ten minutes" on a
// real ecst dev, started with the documented wait: every shell block as
// written, in order, in one bash, each file the walkthrough names saved
// where it says, and the Go program built against this tree. Then the
// read model holds what the walkthrough wrote.
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	script.WriteString(documentedDevWait(t))
	files := 0
	for _, b := range sectionBlocks(t, devDoc, "Your own entity") {
		switch {
		case b.file != "":
			fmt.Fprintf(&script, "cat > %s <<'ECST_DOC_FILE'\n%sECST_DOC_FILE\n", b.file, b.text)
			files++
		case b.lang == "sh":
			script.WriteString(b.text)
		}
	}
	if files != 3 {
		t.Fatalf("the walkthrough names %d files; want book.avsc, ecst.yaml and main.go", files)
	}
	script.WriteString(`echo '--- book_mirror'
psql "$ECST_DATABASE_URL" -At -c 'SELECT _key, version, title, price_cents FROM book_mirror ORDER BY _key'
kill $pid
wait $pid
`)
	out, errOut, err := runScript(ctx, t, testkit.OpenTempDir(t), script.String(),
		"PATH="+ecstOnPath(t), "ECST_SRC="+src, "GOWORK=", "GOFLAGS=-buildvcs=false")
	if err != nil {
		t.Fatalf("the walkthrough failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	if !strings.Contains(out, "ecst verify: exit 1") {
		t.Errorf("verify did not find the drift the walkthrough makes (exit 1); stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	_, mirror, _ := strings.Cut(out, "--- book_mirror\n")
	want := "b-1|2|The Left Hand of Darkness|1199\nb-2|2|A Wizard of Earthsea|1099\n"
	if mirror != want {
		t.Errorf("book_mirror after the walkthrough:\n%s\nwant:\n%s\nstderr:\n%s", mirror, want, errOut)
	}
}
