package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// explainYAML rewrites go.yaml's errors for a person fixing data by hand:
// each names the line at fault and shows it among its neighbours.
func explainYAML(err error, data []byte) error {
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxError(err, text, lines)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		line, rest, ok := splitLine(m)
		if field, typ, found := parseUnknownField(m); found {
			hint := "check the spelling"
			if others := typesWithKey(field, typ); len(others) > 0 {
				hint = fmt.Sprintf("%q is a key of %s: check its indentation", field, strings.Join(others, " and "))
			}
			rest = fmt.Sprintf("unknown key %q; valid keys here are %s (%s)", field, strings.Join(knownKeys(typ), ", "), hint)
		}
		if !ok {
			msgs = append(msgs, rest)
			continue
		}
		msgs = append(msgs, fmt.Sprintf("line %d: %s\n%s", line, rest, excerpt(lines, line)))
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// syntaxError places a YAML syntax error. go.yaml reports the line where
// the enclosing block began rather than the line at fault (a key indented
// one space short inside entities is reported on the entity's first
// line), so the line at fault is found as the first one at which the
// document read so far fails the same way.
func syntaxError(err error, text string, lines []string) error {
	msg := err.Error()
	line, what, ok := splitLine(strings.TrimPrefix(msg, "yaml: "))
	if !ok {
		return fmt.Errorf("invalid YAML: %w", err)
	}
	end := 0
	for n := range lines {
		end += len(lines[n]) + 1
		var node yaml.Node
		if e := yaml.Unmarshal([]byte(text[:min(end, len(text))]), &node); e != nil && e.Error() == msg {
			line = n + 1
			break
		}
	}
	hint := "check its indentation against the lines around it"
	if line <= len(lines) && strings.HasPrefix(strings.TrimLeft(lines[line-1], " "), "\t") {
		hint = "YAML indents with spaces, and this line has a tab"
	}
	return fmt.Errorf("invalid YAML at line %d: %s; %s\n%s", line, what, hint, excerpt(lines, line))
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// splitLine splits go.yaml's "line N: what".
func splitLine(m string) (int, string, bool) {
	sm := lineRE.FindStringSubmatch(m)
	if sm == nil {
		return 0, m, false
	}
	n, err := strconv.Atoi(sm[1])
	return n, sm[2], err == nil
}

// excerpt shows line n (1-based) marked, with two lines before it and one
// after.
func excerpt(lines []string, n int) string {
	if n < 1 || n > len(lines) {
		return ""
	}
	first, last := max(1, n-2), min(len(lines), n+1)
	if last > n && strings.TrimSpace(lines[last-1]) == "" {
		last = n // a trailing blank line shows nothing
	}
	w := len(strconv.Itoa(last))
	var b strings.Builder
	for i := first; i <= last; i++ {
		mark := "   "
		if i == n {
			mark = ">  "
		}
		fmt.Fprintf(&b, "%s%*d | %s\n", mark, w, i, lines[i-1])
	}
	return strings.TrimRight(b.String(), "\n")
}

// keyOwners names, for each config type, where its keys go.
var keyOwners = []struct{ typ, where string }{
	{"Config", "the top level"},
	{"Database", "database"},
	{"Kafka", "kafka"},
	{"TLS", "tls"},
	{"SASL", "sasl"},
	{"Registry", "schema_registry"},
	{"Outbox", "outbox"},
	{"Relay", "relay"},
	{"Entity", "an entity"},
	{"Source", "source"},
}

// typesWithKey names where else key is valid: a key that is valid
// elsewhere is usually indented wrong, not misspelt.
func typesWithKey(key, except string) []string {
	var out []string
	for _, o := range keyOwners {
		if o.typ != except && slices.Contains(knownKeys(o.typ), key) {
			out = append(out, o.where)
		}
	}
	return out
}
