package cli

import (
	"bytes"
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionFlag: --version prints the build's version line and exits 0.
// (A test binary carries no VCS stamp; TestBuildVersion covers that part.)
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-v"} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), []string{arg}, IO{In: strings.NewReader(""), Out: &out, Err: &errb})
		want := "ecst version " + version() + "\n"
		if code != ExitOK || out.String() != want || errb.Len() != 0 {
			t.Errorf("ecst %s: code %d, out %q (want %q), err %q", arg, code, out.String(), want, errb.String())
		}
		if !strings.HasSuffix(out.String(), " "+runtime.Version()+"\n") {
			t.Errorf("ecst %s does not end with the Go version %s: %q", arg, runtime.Version(), out.String())
		}
	}
}

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified, at string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "-compiler", Value: "gc"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: at},
			{Key: "vcs.modified", Value: modified},
		}
	}
	for _, c := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"a release", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: vcs("5d1d86a419ef7ab9664989b2b37a3c07d4c57651", "false", "2026-11-24T03:47:35Z")},
			"v1.2.3 (commit 5d1d86a419ef, 2026-11-24T03:47:35Z) go1.26.8"},
		{"a build from a clone with changes", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261124034735-5d1d86a419ef+dirty"},
			Settings: vcs("5d1d86a419ef7ab9664989b2b37a3c07d4c57651", "true", "2026-11-24T03:47:35Z")},
			"v0.0.0-20261124034735-5d1d86a419ef+dirty (commit 5d1d86a419ef-dirty, 2026-11-24T03:47:35Z) go1.26.8"},
		{"no VCS information (-buildvcs=false, a git worktree)", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"(devel) go1.26.8"},
		{"no module version (a test binary)", debug.BuildInfo{GoVersion: "go1.26.8"}, "(devel) go1.26.8"},
	} {
		if got := buildVersion(&c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
