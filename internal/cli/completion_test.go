package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCompletionScripts: `ecst completion SHELL` prints cobra's script for
// the shell, and the bash one is valid bash.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for shell, markers := range map[string][]string{
		"bash": {"# bash completion V2 for ecst", "__start_ecst()", "complete -o default -F __start_ecst ecst"},
		"zsh":  {"#compdef ecst", "compdef _ecst ecst", "__complete"},
		"fish": {"# fish completion for ecst", "complete -c ecst ", "__complete"},
	} {
		r := run(t, nil, "completion", shell)
		if r.code != 0 || r.err != "" {
			t.Fatalf("completion %s: code %d\n%s", shell, r.code, r.err)
		}
		for _, m := range markers {
			if !strings.Contains(r.out, m) {
				t.Errorf("completion %s: the script lacks %q", shell, m)
			}
		}
		if shell == "bash" {
			script := filepath.Join(t.TempDir(), "ecst.bash")
			if err := os.WriteFile(script, []byte(r.out), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
				t.Errorf("bash -n on the completion script: %v\n%s", err, out)
			}
		}
	}
	r := run(t, nil, "completion", "--help")
	if r.code != 0 || !strings.Contains(r.out, "bash") || !strings.Contains(r.out, "zsh") || !strings.Contains(r.out, "fish") {
		t.Fatalf("completion --help: code %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, nil, "completion", "bash", "--help")
	if !strings.Contains(r.out, "source <(ecst completion bash)") {
		t.Errorf("completion bash --help does not say how to install it:\n%s", r.out)
	}
	r = run(t, nil, "--help")
	if !strings.Contains(r.out, "ecst completion bash --help") {
		t.Errorf("ecst --help does not point at completion:\n%s", r.out)
	}
}

// TestBashCompletionCompletes loads the script into bash and completes, as
// a user's Tab does: bash calls `ecst __complete …`, here the test binary
// standing in for ecst.
func TestBashCompletionCompletes(t *testing.T) {
	t.Parallel()
	// Cobra's bash script needs the bash-completion package, as its help
	// says; users have it, and so must the test.
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("bash-completion is not installed (%v): run `make setup-interop` (make test runs it)", err)
	}
	path := selfOnPath(t)
	complete := func(words ...string) []string {
		t.Helper()
		line := strings.Join(words, " ")
		script := `source ` + bashCompletion + `
source <(ecst completion bash)
COMP_WORDS=(` + strings.Join(quoteAll(words), " ") + `)
COMP_CWORD=` + strconv.Itoa(len(words)-1) + `
COMP_LINE=` + shellQuote(line) + `
COMP_POINT=${#COMP_LINE}
__start_ecst
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+path)
		// Stderr gets "compopt: not currently executing completion
		// function": this bash is not inside a real Tab press.
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("complete %q: %v\n%s%s", line, err, out, stderr.String())
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, strings.TrimSpace(l))
		}
		return got
	}
	if got := complete("ecst", "sch"); !slices.Equal(got, []string{"schema"}) {
		t.Errorf("ecst sch<Tab> = %q, want schema", got)
	}
	got := complete("ecst", "schema", "")
	for _, want := range []string{"register", "check", "list", "diff"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("ecst schema <Tab> = %q, lacks %s", got, want)
		}
	}
	if got := complete("ecst", "--log-f"); !slices.Equal(got, []string{"--log-format"}) {
		t.Errorf("ecst --log-f<Tab> = %q", got)
	}
}

// selfOnPath returns a PATH with this test binary first, as ecst: a
// command line that bash runs (a completion, a suggestion as printed) runs
// the test binary's ecst.
func selfOnPath(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	wrapper := "#!/bin/sh\nECST_TEST_RUN_AS_ECST=1 exec " + shellQuote(self) + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "ecst"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin + string(os.PathListSeparator) + os.Getenv("PATH")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = shellQuote(s)
	}
	return out
}
