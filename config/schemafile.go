package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hamba/avro/v2"
)

// ParseSchemaFile parses the content of an .avsc file, with a schema cache
// of its own (see schemas.Parse). Its errors name the file. An .avsc is
// JSON, and hamba/avro, given text that is not, reports it as an unknown
// type named by the whole file: a JSON syntax error is reported as one,
// with its line and column and the line itself, and no error quotes more
// than a line of the file.
func ParseSchemaFile(path string, data []byte) (avro.Schema, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("schema file %s is empty; write the entity's Avro record schema in it", path)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, jsonError(path, data, err)
	}
	s, err := avro.ParseWithCache(string(data), "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("schema file %s is JSON but not a valid Avro schema: %s", path, clip(err.Error(), 200))
	}
	return s, nil
}

func jsonError(path string, data []byte, err error) error {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return fmt.Errorf("schema file %s is not valid JSON: %w", path, err)
	}
	off := int(se.Offset) - 1 // the byte that did not fit
	if off < 0 {
		off = 0
	}
	if off > len(data) {
		off = len(data)
	}
	start := bytes.LastIndexByte(data[:off], '\n') + 1
	end := len(data)
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		end = off + i
	}
	line := bytes.Count(data[:start], []byte("\n")) + 1
	col := utf8.RuneCount(data[start:off]) + 1
	text := strings.TrimRight(string(data[start:end]), "\r")
	msg := se.Error()
	switch {
	case trailingComma(data, off):
		msg += " (a comma before a closing bracket: JSON allows none)"
	case int(se.Offset) >= len(data):
		msg += " (the file ends inside an object or array: a } or ] is missing)"
	}
	num := fmt.Sprint(line)
	return fmt.Errorf("JSON syntax error in schema file %s at line %d, column %d: %s\n%s | %s\n%s | %s^",
		path, line, col, msg, num, clip(text, 160), strings.Repeat(" ", len(num)), caretPad(text, col))
}

// trailingComma reports whether the byte at off closes an object or array
// right after a comma.
func trailingComma(data []byte, off int) bool {
	if off >= len(data) || (data[off] != '}' && data[off] != ']') {
		return false
	}
	before := bytes.TrimRight(data[:off], " \t\r\n")
	return len(before) > 0 && before[len(before)-1] == ','
}

// caretPad is the blank before column col of text, tabs kept so that the
// caret lines up under the character.
func caretPad(text string, col int) string {
	var b strings.Builder
	for i, r := range text {
		if utf8.RuneCountInString(text[:i]) >= col-1 || i >= 160 {
			break
		}
		if r == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
