package cli

import (
	"strconv"
	"strings"
)

// optionFlags maps the Options fields that the republish and verify
// packages name in their errors (they speak Go, not flags) to the flags
// that set them.
var optionFlags = map[string]string{
	"republish.Options.All":              "--all",
	"republish.Options.Keys":             "--key",
	"republish.Options.Where":            "--where",
	"republish.Options.TombstoneOrphans": "--tombstone-orphans",
	"republish.Options.Batch":            "--batch",
	"republish.Options.Rate":             "--rate",
	"republish.Options.MaxBacklog":       "--max-backlog",
	"republish.Options.DryRun":           "--dry-run",
	"republish.Options.Resume":           "--resume",
	"verify.Options.Mirror":              "--mirror",
	"verify.Options.Repair":              "--repair",
	"verify.Options.Wait":                "--wait",
	"verify.Options.Samples":             "--samples",
}

// flagError is a library error told in flags; it unwraps to the error.
type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }

// inFlags tells err, an error of the republish or verify package about
// entity, in flags: a field (verify.Options.Mirror) becomes its flag
// (--mirror), and a set of Options to run with (republish.Options{Resume:
// 7}) the command that runs with them (`ecst republish customer --resume
// 7`).
func inFlags(err error, entity string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if t := translateOptions(msg, entity); t != msg {
		return &flagError{msg: t, err: err}
	}
	return err
}

// translateOptions rewrites msg as inFlags says. What it cannot read is
// left as it is.
func translateOptions(msg, entity string) string {
	var b strings.Builder
	for {
		i, pkg := nextOptions(msg)
		if i < 0 {
			return b.String() + msg
		}
		b.WriteString(msg[:i])
		msg = msg[i:]
		prefix := pkg + ".Options"
		rest := msg[len(prefix):]
		switch {
		case strings.HasPrefix(rest, "."):
			name := fieldName(rest[1:])
			if flag, ok := optionFlags[prefix+"."+name]; ok {
				b.WriteString(flag)
				msg = rest[1+len(name):]
				continue
			}
		case strings.HasPrefix(rest, "{"):
			if args, n, ok := literalFlags(prefix, rest); ok {
				b.WriteString("`" + strings.Join(append([]string{"ecst", pkg, shellArg(entity)}, args...), " ") + "`")
				msg = rest[n:]
				continue
			}
		}
		b.WriteString(prefix)
		msg = rest
	}
}

// nextOptions finds the next "republish.Options" or "verify.Options" in
// msg.
func nextOptions(msg string) (int, string) {
	at, pkg := -1, ""
	for _, p := range []string{"republish", "verify"} {
		if i := strings.Index(msg, p+".Options"); i >= 0 && (at < 0 || i < at) {
			at, pkg = i, p
		}
	}
	return at, pkg
}

func fieldName(s string) string {
	n := 0
	for n < len(s) && (s[n] >= 'a' && s[n] <= 'z' || s[n] >= 'A' && s[n] <= 'Z' || s[n] >= '0' && s[n] <= '9') {
		n++
	}
	return s[:n]
}

// literalFlags reads the composite literal that lit starts with
// ({Mirror: "m", Repair: true}) as flags (--mirror m --repair), and says
// how long it is.
func literalFlags(prefix, lit string) (args []string, n int, ok bool) {
	s := lit[1:]
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return args, len(lit) - len(s) + 1, true
		}
		name := fieldName(s)
		flag, known := optionFlags[prefix+"."+name]
		if name == "" || !known || !strings.HasPrefix(s[len(name):], ": ") {
			return nil, 0, false
		}
		s = s[len(name)+2:]
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, 0, false
			}
			value, _ := strconv.Unquote(q)
			args = append(args, flag, shellArg(value))
			s = s[len(q):]
			continue
		}
		end := strings.IndexAny(s, ",}")
		if end < 0 {
			return nil, 0, false
		}
		switch value := s[:end]; value {
		case "true": // a switch
			args = append(args, flag)
		case "false":
		default:
			args = append(args, flag, shellArg(value))
		}
		s = s[end:]
	}
}
