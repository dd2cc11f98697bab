package config

import (
	"log/slog"
	"net/url"
	"strings"
)

const redacted = "[REDACTED]"

// Secret holds a credential. Every way of printing it (fmt verbs, slog, JSON,
// YAML) shows a placeholder, so a Config can be logged or dumped whole.
type Secret string

// Reveal returns the credential itself, for handing to a client library.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the credential.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue keeps slog from printing the credential.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText is used by JSON and YAML encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// SecretURL is a connection URL that may carry a password, in the userinfo
// part or as a password= query parameter. It prints with the password
// replaced, so the rest of the URL stays useful in logs and errors.
type SecretURL string

// Reveal returns the URL with its password, for handing to a client library.
func (u SecretURL) Reveal() string { return string(u) }

func (u SecretURL) String() string       { return RedactURL(string(u)) }
func (u SecretURL) GoString() string     { return `"` + u.String() + `"` }
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// MarshalText is used by JSON and YAML encoders.
func (u SecretURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// RedactURL replaces any password in a URL or a libpq key=value string. A
// string it cannot parse is replaced whole: when in doubt, print nothing.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	if !strings.Contains(raw, "://") {
		return redactKeyValue(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	changed := false
	for k := range q {
		if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redactKeyValue handles the libpq "host=... password=..." form.
func redactKeyValue(raw string) string {
	fields := strings.Fields(raw)
	for i, f := range fields {
		k, _, ok := strings.Cut(f, "=")
		if !ok {
			// A quoted value with spaces makes the split unreliable.
			if strings.Contains(raw, "'") {
				return redacted
			}
			continue
		}
		if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
			fields[i] = k + "=xxxxx"
		}
	}
	if strings.Contains(raw, "'") && strings.Contains(strings.ToLower(raw), "password") {
		return redacted
	}
	return strings.Join(fields, " ")
}
