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
	"slices"
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
	if hint := switchHint(args); hint != "" {
		fmt.Fprintln(stdio.Err, hint)
	}
	var p *problemError
	if errors.As(err, &p) {
		return ExitProblem
	}
	return ExitError
}

// switchHint explains a failed command line that gave a boolean flag a
// value as the next word (--kafka-tls yes): the flag took none, and the
// word became an argument.
func switchHint(args []string) string {
	for i, arg := range args[:max(len(args)-1, 0)] {
		for _, o := range config.Overrides {
			if !o.Bool || o.Flag == "" || arg != "--"+o.Flag {
				continue
			}
			if v := strings.ToLower(args[i+1]); slices.Contains([]string{"true", "false", "yes", "no", "on", "off", "1", "0", "t", "f", "y", "n"}, v) {
				return fmt.Sprintf("--%s is a switch and takes no value (%q was read as an argument): write --%s, or --%s=false", o.Flag, args[i+1], o.Flag, o.Flag)
			}
		}
	}
	return ""
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
	a := &app{io: stdio}
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
		switch {
		case o.Flag == "":
		case o.Bool:
			pf.Bool(o.Flag, false, o.Usage+" (env "+o.Env+")")
		default:
			pf.String(o.Flag, "", o.Usage+" (env "+o.Env+")")
		}
	}
	root.AddCommand(
		newMigrateCmd(a),
		newOutboxCmd(a),
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
		newCaptureCmd(a),
		newVerifyCmd(a),
		newStatusCmd(a),
		newConsoleCmd(a),
		newDevCmd(a),
	)
	// Cobra adds these when the tree executes; adding them now makes the
	// tree whole for those who walk it without executing (gendocs).
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	a.root = root
	return root, a
}

// loadEntity is the loaded config and its entity of that name.
func (a *app) loadEntity(name string) (*config.Config, *config.Entity, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	e, err := cfg.Entity(name)
	if err != nil {
		return nil, nil, err
	}
	return cfg, e, nil
}

// loadConfig reads the config with env and flag overrides and validates it.
func (a *app) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(a.configPath, a.io.Env)
	if err != nil {
		return nil, err
	}
	for _, o := range config.Overrides {
		if o.Flag == "" || a.cmd == nil {
			continue
		}
		if f := a.cmd.Flags().Lookup(o.Flag); f != nil && f.Changed {
			if err := o.Set(cfg, f.Value.String()); err != nil {
				return nil, fmt.Errorf("--%s: %w", o.Flag, err)
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

// connect opens a pool and checks that the database answers, within the
// connect bound, with an error that says which setting to fix and never
// shows a password (see config.Database.Connect).
// database is the loaded config and a pool on its database.
func (a *app) database(ctx context.Context) (*config.Config, *pgxpool.Pool, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	pool, err := connect(ctx, cfg.Database)
	if err != nil {
		return nil, nil, err
	}
	return cfg, pool, nil
}

func connect(ctx context.Context, db config.Database) (*pgxpool.Pool, error) {
	return db.Connect(ctx)
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
