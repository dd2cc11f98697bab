// Command gendocs writes the CLI reference: one markdown page per ecst
// command, in docs/cli (or the directory given). Run it after adding or
// changing a command: `make docs`.
package main

import (
	"fmt"
	"os"

	"github.com/ecst-io/ecst/internal/cli/clidocs"
)

func main() {
	dir := clidocs.Dir
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := clidocs.Write(dir); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
