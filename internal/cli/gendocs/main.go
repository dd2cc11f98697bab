// Command gendocs writes the generated references: the CLI reference, one
// markdown page per ecst command, in docs/cli, and the ecst.yaml reference,
// docs/config.md (under the docs directory given, ./docs by default). Run it
// after changing a command or a config key: `make docs`.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ecst-io/ecst/internal/cli/clidocs"
	"github.com/ecst-io/ecst/internal/configdocs"
)

func main() {
	docs := "docs"
	if len(os.Args) > 1 {
		docs = os.Args[1]
	}
	if err := clidocs.Write(filepath.Join(docs, filepath.Base(clidocs.Dir))); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
	if err := configdocs.Write(filepath.Join(docs, filepath.Base(configdocs.File))); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
