//go:build linux

package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/cli"
	"github.com/ecst-io/ecst/internal/kafkatest"
	"github.com/ecst-io/ecst/internal/testkit"
)

// TestTailFromTheEndSaysSoOnATerminal: `ecst tail TOPIC` follows from the
// end and prints nothing until a record arrives. On a terminal (a real
// pseudo-terminal here) it says so on stderr, once; piped, or with
// --from-beginning, it does not.
func TestTailFromTheEndSaysSoOnATerminal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := kafkatest.New(t)
	topic := fmt.Sprintf("tail-hint-%d", time.Now().UnixNano())
	b.CreateTopic(t, topic, 1, nil)
	cl, err := kgo.NewClient(b.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	env := func(k string) string {
		if k == "ECST_BROKERS" {
			return strings.Join(b.Seeds, ",")
		}
		return ""
	}
	hint := "waiting for new records on " + topic + "; --from-beginning to read it all"

	// tailOne runs `ecst tail TOPIC -n 1 [args]` with stderr on errw, and
	// writes records until tail has printed one (a record written before
	// tail found the end is not for it to see).
	tailOne := func(errw io.Writer, args ...string) string {
		t.Helper()
		out := &testkit.Buffer{}
		done := make(chan int, 1)
		go func() {
			done <- cli.Run(ctx, append([]string{"tail", topic, "-n", "1"}, args...), cli.IO{In: strings.NewReader(""), Out: out, Err: errw, Env: env})
		}()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case code := <-done:
				if code != 0 || !strings.Contains(out.String(), `"key":"k"`) {
					t.Fatalf("tail %v: exit %d, stdout %q", args, code, out.String())
				}
				return out.String()
			case <-tick.C:
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatalf("tail %v: no record printed", args)
			}
		}
	}

	ctrl, term := openPTY(t)
	seen := make(chan string, 1)
	go func() { // the terminal's screen
		all, _ := io.ReadAll(ctrl) // EIO once the terminal end is closed
		seen <- string(all)
	}()
	out := tailOne(term)
	tailOne(term, "--from-beginning")
	term.Close()
	screen := <-seen
	if strings.Count(screen, hint) != 1 {
		t.Errorf("the terminal shows %q; want the hint %q once, for the tail from the end only", screen, hint)
	}
	if strings.Contains(out, "waiting") {
		t.Errorf("the hint went to stdout: %q", out)
	}

	var piped bytes.Buffer
	tailOne(&piped)
	if piped.Len() != 0 {
		t.Errorf("stderr not a terminal, yet tail wrote %q", piped.String())
	}
}

// openPTY opens a pseudo-terminal: term is the end a program writes to, as
// it would to a terminal; ctrl reads what would show on the screen.
func openPTY(t *testing.T) (ctrl, term *os.File) {
	t.Helper()
	ctrl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ctrl.Close() })
	ioctl := func(req uintptr, arg unsafe.Pointer) {
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ctrl.Fd(), req, uintptr(arg)); errno != 0 {
			t.Fatalf("ioctl %#x on /dev/ptmx: %v", req, errno)
		}
	}
	var unlock int32
	ioctl(syscall.TIOCSPTLCK, unsafe.Pointer(&unlock))
	var n uint32
	ioctl(syscall.TIOCGPTN, unsafe.Pointer(&n))
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the terminal end: %v", err)
	}
	t.Cleanup(func() { term.Close() })
	return ctrl, term
}
