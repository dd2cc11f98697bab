package cli

import (
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ecst-io/ecst/config"
)

// Every command ecst suggests must run as it is printed, against the same
// system: with the --config and the settings' flags this command was given.
// Commands ecst prints itself are built by command; the packages under the
// CLI (outbox, consumer, verify, ...) cannot know the flags, and write the
// commands their errors suggest in backquotes, `ecst relay`, which
// withFlags completes.

// unrepeatedFlags change how ecst prints, not what it talks to: a
// suggestion leaves them out.
var unrepeatedFlags = []string{"log-format", "log-level"}

// secretFlags may hold a password, which a suggestion prints redacted: the
// flags' help says to prefer the environment for those.
var secretFlags = []string{"database-url", "schema-registry-url"}

// globalFlags are the root's flags this command was given, as arguments.
func (a *app) globalFlags() []string {
	if a.root == nil {
		return nil
	}
	var out []string
	if f := a.root.PersistentFlags().Lookup("config"); f != nil && f.Changed {
		out = append(out, "--config", shellArg(f.Value.String())) // first, where a reader looks for it
	}
	a.root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !f.Changed || f.Name == "config" || slices.Contains(unrepeatedFlags, f.Name) {
			return
		}
		flag := "--" + f.Name
		if v, ok := f.Value.(pflag.SliceValue); ok {
			for _, s := range v.GetSlice() {
				out = append(out, flag, shellArg(s))
			}
			return
		}
		value := f.Value.String()
		switch {
		case f.Value.Type() == "bool" && value == "true":
			out = append(out, flag)
		case f.Value.Type() == "bool":
			out = append(out, flag+"="+value)
		case slices.Contains(secretFlags, f.Name):
			out = append(out, flag, shellArg(config.RedactURL(value)))
		default:
			out = append(out, flag, shellArg(value))
		}
	})
	return out
}

// command is the ecst command line that runs args the way this command
// ran: with its global flags. args are quoted for a POSIX shell as needed.
func (a *app) command(args ...string) string {
	parts := append([]string{"ecst"}, a.globalFlags()...)
	for _, s := range args {
		parts = append(parts, shellArg(s))
	}
	return strings.Join(parts, " ")
}

// withFlags adds this command's global flags to every `ecst …` command msg
// suggests (one that has flags before its subcommand already is left
// alone).
func (a *app) withFlags(msg string) string {
	g := a.globalFlags()
	if len(g) == 0 {
		return msg
	}
	const mark = "`ecst "
	var b strings.Builder
	for {
		i := strings.Index(msg, mark)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:i+len(mark)])
		msg = msg[i+len(mark):]
		if !strings.HasPrefix(msg, "-") {
			b.WriteString(strings.Join(g, " ") + " ")
		}
	}
}

// shellArg quotes s for a POSIX shell when it needs it.
func shellArg(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
