package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// status shows work under way as one line that line composes: redrawn in
// place on a terminal, printed at most every 5 seconds elsewhere (logs,
// CI), and not at all for work done within those 5 seconds. Unlike
// progress it follows work with several counters (verify reads the source
// and the topic at the same time) and says things in passing.
type status struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	line  func() string
	last  time.Time
	drawn bool // a line is on the terminal, to clear before writing
	every time.Duration
}

func newStatus(w io.Writer, line func() string) *status {
	s := &status{w: w, line: line, last: time.Now(), every: 5 * time.Second}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		s.tty, s.every = true, 100*time.Millisecond
	}
	return s
}

// tick shows the line if it is due.
func (s *status) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.last) < s.every {
		return
	}
	s.last = time.Now()
	if s.tty {
		fmt.Fprint(s.w, "\r\033[K"+s.line())
		s.drawn = true
		return
	}
	fmt.Fprintln(s.w, s.line())
}

// say writes a line now.
func (s *status) say(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
	fmt.Fprintf(s.w, format+"\n", args...)
}

// finish clears the line from a terminal.
func (s *status) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
}

func (s *status) clear() {
	if s.drawn {
		fmt.Fprint(s.w, "\r\033[K")
		s.drawn = false
	}
}
