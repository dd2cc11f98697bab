package config

import (
	"errors"
	"strings"
	"unicode"
)

// selectColumns returns the output column names of a SELECT statement's
// top-level select list, lowercased unless quoted, and whether the list has a
// star. It is a static check that catches a forgotten key column before
// anything runs; republish checks the real result columns again against the
// database, so this only needs to understand the common shapes.
func selectColumns(query string) (cols []string, star bool, err error) {
	toks := tokenize(query)
	start := -1
	for i, t := range toks {
		if t.depth == 0 && strings.EqualFold(t.text, "select") {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return nil, false, errors.New("is not a SELECT statement; write the query that returns one row per entity")
	}
	if start < len(toks) && strings.EqualFold(toks[start].text, "distinct") {
		start++
	}
	var item []token
	flush := func() {
		if len(item) == 0 {
			return
		}
		name, isStar := outputName(item)
		if isStar {
			star = true
		} else if name != "" {
			cols = append(cols, name)
		}
		item = item[:0]
	}
	for _, t := range toks[start:] {
		if t.depth == 0 && strings.EqualFold(t.text, "from") {
			break
		}
		if t.depth == 0 && t.text == "," {
			flush()
			continue
		}
		item = append(item, t)
	}
	flush()
	if len(cols) == 0 && !star {
		return nil, false, errors.New("selects no columns")
	}
	return cols, star, nil
}

type token struct {
	text  string
	depth int
}

// outputName is the name Postgres gives a select-list item: its alias, or
// the last part of a column reference.
func outputName(item []token) (string, bool) {
	last := item[len(item)-1].text
	if len(item) == 1 && (last == "*" || strings.HasSuffix(last, ".*")) {
		return "", true
	}
	if len(item) >= 2 && isName(last) {
		prev := item[len(item)-2].text
		if strings.EqualFold(prev, "as") || isName(prev) || prev == ")" || strings.HasPrefix(prev, "'") {
			return ident(last), false
		}
	}
	if len(item) == 1 {
		last, _, _ = strings.Cut(last, "::") // id::text is still named id
		parts := strings.Split(last, ".")
		return ident(parts[len(parts)-1]), false
	}
	return "", false // an expression without an alias: ?column?
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	r := []rune(s)[0]
	return r == '"' || r == '_' || unicode.IsLetter(r)
}

func ident(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strings.Trim(s, `"`)
	}
	return strings.ToLower(s)
}

// tokenize splits SQL into words, quoted strings and punctuation, tracking
// parenthesis depth so that commas and FROMs inside sub-expressions are
// not taken for top-level ones.
func tokenize(q string) []token {
	var toks []token
	depth := 0
	rs := []rune(q)
	for i := 0; i < len(rs); {
		r := rs[i]
		end := i + 1 // where this token ends
		switch {
		case unicode.IsSpace(r):
		case r == '(':
			toks = append(toks, token{"(", depth})
			depth++
		case r == ')':
			depth--
			toks = append(toks, token{")", depth})
		case r == '\'' || r == '"':
			end = quotedEnd(rs, i)
			toks = append(toks, token{string(rs[i:end]), depth})
		case r == ':' && i+1 < len(rs) && rs[i+1] == ':': // a cast: ::type stays with its expression
			end = castEnd(rs, i)
			if n := len(toks); n > 0 {
				toks[n-1].text += string(rs[i:end])
			}
		case isWordStart(r):
			end = wordEnd(rs, i)
			toks = append(toks, token{string(rs[i:end]), depth})
		default: // a comma, an operator
			toks = append(toks, token{string(r), depth})
		}
		i = end
	}
	return toks
}

// quotedEnd is the end of the string or name quoted at rs[i], past its
// closing quote (the end of rs when there is none).
func quotedEnd(rs []rune, i int) int {
	j := i + 1
	for j < len(rs) && rs[j] != rs[i] {
		j++
	}
	return min(j+1, len(rs))
}

// castEnd is the end of the cast ::type at rs[i].
func castEnd(rs []rune, i int) int {
	j := i + 2
	for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j]) || rs[j] == '_') {
		j++
	}
	return j
}

func isWordStart(r rune) bool {
	return unicode.IsLetter(r) || r == '_' || r == '*' || unicode.IsDigit(r)
}

// wordEnd is the end of the word at rs[i]: a name, a qualified name (t.id,
// t.*, t."Name"), a number or a star.
func wordEnd(rs []rune, i int) int {
	j := i
	for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j]) || rs[j] == '_' || rs[j] == '.' || rs[j] == '*' || rs[j] == '$') {
		j++
	}
	if j < len(rs) && rs[j] == '"' { // t."Name"
		return quotedEnd(rs, j)
	}
	return j
}
