// Package cli is ecst's command tree. Commands take their input and output
// from an IO, so tests drive the real tree with SetArgs and read exactly
// what a user would see.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/ecst-io/ecst/config"
)

// Exit codes, a contract scripts rely on.
const (
	ExitOK      = 0
	ExitProblem = 1 // the command ran and found a problem (drift, incompatibility, pending work)
	ExitError   = 2 // usage, config or connection error
)

// IO is where a command reads and writes, and its environment.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
	Env func(string) string
}

// problemError marks "the command ran and found a problem": exit 1.
type problemError struct{ msg string }

func (e *problemError) Error() string { return e.msg }

func problem(format string, args ...any) error { return &problemError{fmt.Sprintf(format, args...)} }

// app holds what the global flags set, for the commands to read.
type app struct {
	io         IO
	configPath string
	logFormat  string
	logLevel   string
	overrides  map[string]*string // flag name → value given
	cmd        *cobra.Command
	root       *cobra.Command
}

// Run executes the command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdio IO) int {
	root, a := newRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stdio.Err, "ecst:", a.withFlags(err.Error()))
	var p *problemError
	if errors.As(err, &p) {
		return ExitProblem
	}
	return ExitError
}

// NewCommand builds the whole command tree on stdio, as Run executes it,
// for tools that walk it (gendocs writes docs/cli from it).
func NewCommand(stdio IO) *cobra.Command {
	root, _ := newRoot(stdio)
	return root
}

func newRoot(stdio IO) (*cobra.Command, *app) {
	if stdio.Env == nil {
		stdio.Env = func(string) string { return "" }
	}
	a := &app{io: stdio, overrides: map[string]*string{}}
	root := &cobra.Command{
		Use:   "ecst",
		Short: "Event-carried state transfer on Kafka: outbox, relay, schemas, republish, verify",
		Long: `ecst moves the full state of your entities from PostgreSQL to log-compacted Kafka
topics and keeps every consumer's copy converging on it.

A service writes an entity's full state into the ecst.outbox table in the same
transaction as its own change (Go package producer). The relay publishes outbox
rows, in order per key, to one compacted topic per entity: key = entity id,
value = Avro in the Confluent wire format, null = deleted. Consumers rebuild
read models by replaying a topic from offset 0. When state goes bad anywhere,
'ecst republish' rewrites the current state of every key from the source tables.

Configuration comes from ecst.yaml (--config), then ECST_* environment
variables, then flags. Credentials are read from the file or the environment,
never from flags, and never printed.

Exit codes: 0 success; 1 the command ran and found a problem; 2 usage,
configuration or connection error.

Shell completion for bash, zsh, fish and PowerShell: 'ecst completion bash'
prints the script; 'ecst completion bash --help' (or zsh, fish) says how to
install it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.cmd = cmd
			switch a.logFormat {
			case "text", "json":
			default:
				return fmt.Errorf("--log-format: %q is not text or json", a.logFormat)
			}
			return nil
		},
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nRun '%s --help' for usage", err, c.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "config file (default ./ecst.yaml when it exists)")
	pf.StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	for _, o := range config.Overrides {
		if o.Flag == "" {
			continue
		}
		v := new(string)
		a.overrides[o.Flag] = v
		pf.StringVar(v, o.Flag, "", o.Usage+" (env "+o.Env+")")
	}
	root.AddCommand(
		newMigrateCmd(a),
		newRelayCmd(a),
		newTopicsCmd(a),
		newBenchCmd(a),
		newSchemaCmd(a),
		newMirrorCmd(a),
		newRebuildCmd(a),
		newTailCmd(a),
		newConfigCmd(a),
		newDemoCmd(a),
		newRepublishCmd(a),
		newVerifyCmd(a),
		newDevCmd(a),
	)
	// Cobra adds these when the tree executes; adding them now makes the
	// tree whole for those who walk it without executing (gendocs).
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	a.root = root
	return root, a
}

// loadConfig reads the config with env and flag overrides and validates it.
func (a *app) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(a.configPath, a.io.Env)
	if err != nil {
		return nil, err
	}
	for _, o := range config.Overrides {
		if v := a.overrides[o.Flag]; v != nil && a.cmd != nil && a.cmd.Flags().Changed(o.Flag) {
			if err := o.Set(cfg, *v); err != nil {
				return nil, err
			}
		}
	}
	if err := cfg.Finish(); err != nil {
		where := "configuration"
		if cfg.Path != "" {
			where = cfg.Path
		}
		return nil, fmt.Errorf("%s is invalid:\n  %s", where, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return cfg, nil
}

func (a *app) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if a.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(a.io.Err, opts))
	}
	return slog.New(slog.NewTextHandler(a.io.Err, opts))
}

// connect opens a pool and checks that the database answers, with an error
// that says which setting to fix and never shows a password.
func connect(ctx context.Context, db config.Database) (*pgxpool.Pool, error) {
	conn, err := db.ConnString()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		return nil, fmt.Errorf("database.url (ECST_DATABASE_URL) %s is not a valid PostgreSQL connection string", db.URL)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", db.URL, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (check ECST_DATABASE_URL and that the server is up)", db.URL, err)
	}
	return pool, nil
}

// version is what --version prints after "ecst version": the module
// version, the VCS revision and time when the build recorded them (go build
// in a git clone does, unless -buildvcs=false; a git worktree gives none),
// and the Go version.
// Version, when set at link time (go build -ldflags "-X
// github.com/ecst-io/ecst/internal/cli.Version=v1.2.3"; make build and the
// Dockerfile do), names the build where the Go build info has no module
// version: builds from a source tree without VCS data.
var Version string

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if Version != "" && (bi.Main.Version == "" || bi.Main.Version == "(devel)") {
		bi.Main.Version = Version
	}
	return buildVersion(bi)
}

func buildVersion(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, dirty, at string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		case "vcs.time":
			at = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += fmt.Sprintf(" (commit %s%s, %s)", rev, dirty, at)
	}
	return v + " " + bi.GoVersion
}
