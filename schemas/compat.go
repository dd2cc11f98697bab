package schemas

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
)

// Compatibility levels, as the Schema Registry names them.
const (
	None               = "NONE"
	Backward           = "BACKWARD"
	BackwardTransitive = "BACKWARD_TRANSITIVE"
	Forward            = "FORWARD"
	ForwardTransitive  = "FORWARD_TRANSITIVE"
	Full               = "FULL"
	FullTransitive     = "FULL_TRANSITIVE"
)

// Levels lists every level.
var Levels = []string{None, Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive}

// Version is one earlier version of a subject's schema.
type Version struct {
	// Version is the registry's version number, or 0 for a baseline that
	// is not in a registry (a schema file at a git ref).
	Version int
	// Label names the version in messages: "v3", or "git:main".
	Label string
	// Schema is the version's schema, parsed.
	Schema avro.Schema
	// ID and Text are the registry's id and schema text, when from one.
	ID   int
	Text string // see ID
}

// Problem is one reason a new schema breaks a compatibility level.
type Problem struct {
	// Direction is BACKWARD (the new schema cannot read old records) or
	// FORWARD (old schemas cannot read new records).
	Direction string `json:"direction"`
	// Against is the version the new schema was compared with.
	Against string `json:"against"`
	// Path locates the change: Record.field.nested.
	Path string `json:"path"`
	// Kind is a stable identifier: field-added-without-default,
	// field-removed-without-default, type-changed, ...
	Kind string `json:"kind"`
	// Message says what changed and which readers or writers break.
	Message string `json:"message"`
	// Fix says how to make the change compatible.
	Fix string `json:"fix"`
}

func (p Problem) String() string {
	return p.Message + "; " + p.Fix
}

// Check compares next with the earlier versions (oldest first) under level
// and returns every problem; none means compatible. Non-transitive levels
// compare with the latest version only.
func Check(level string, next avro.Schema, previous []Version) ([]Problem, error) {
	if !slices.Contains(Levels, level) {
		return nil, fmt.Errorf("unknown compatibility level %q; use one of %s", level, strings.Join(Levels, ", "))
	}
	if level == None || len(previous) == 0 {
		return nil, nil
	}
	against := previous
	if !strings.HasSuffix(level, "_TRANSITIVE") {
		against = previous[len(previous)-1:]
	}
	backward := strings.HasPrefix(level, "BACKWARD") || strings.HasPrefix(level, "FULL")
	forward := strings.HasPrefix(level, "FORWARD") || strings.HasPrefix(level, "FULL")
	var out []Problem
	for _, v := range against {
		if backward {
			for _, in := range Resolve(next, v.Schema) {
				out = append(out, explain(Backward, v.Label, in))
			}
		}
		if forward {
			for _, in := range Resolve(v.Schema, next) {
				out = append(out, explain(Forward, v.Label, in))
			}
		}
	}
	return out, nil
}

// Incompatibility is why data written with one schema cannot be read with
// another, by the Avro specification's schema resolution rules.
type Incompatibility struct {
	// Path locates the incompatibility: the root type's name, then
	// .field for a record field, [] for array items, {} for map values
	// ("Customer.addresses[].zip"; "(root)" for an unnamed top-level type).
	Path string
	// Kind is a stable identifier: missing-field-without-default,
	// type-changed, union-branch-not-readable, type-not-in-union,
	// enum-symbol-unknown, name-changed, fixed-size-changed.
	Kind   string
	Reader string // the reader's side, described
	Writer string // the writer's side, described (for enum-symbol-unknown: the symbol)

	readerType avro.Schema // missing-field-without-default: the field's type, for the fix
}

// Resolve lists why data written with writer cannot be read with reader,
// following the Avro specification's schema resolution: matching names
// (or reader aliases), reader fields missing from the writer need a
// default, writer fields the reader lacks are skipped, the numeric and
// string/bytes promotions, enum symbols (or an enum default), and union
// branches. Logical types do not take part, as in the specification.
func Resolve(reader, writer avro.Schema) []Incompatibility {
	c := &resolver{seen: map[[2]string]bool{}}
	c.resolve(rootName(reader, writer), reader, writer)
	return c.out
}

type resolver struct {
	out  []Incompatibility
	seen map[[2]string]bool // record pairs in progress: recursive types
}

func rootName(r, w avro.Schema) string {
	if n, ok := deref(r).(avro.NamedSchema); ok {
		return n.Name()
	}
	if n, ok := deref(w).(avro.NamedSchema); ok {
		return n.Name()
	}
	return "(root)"
}

func deref(s avro.Schema) avro.Schema {
	for {
		ref, ok := s.(*avro.RefSchema)
		if !ok {
			return s
		}
		s = ref.Schema()
	}
}

func (c *resolver) add(path, kind string, r, w avro.Schema) {
	c.out = append(c.out, Incompatibility{Path: path, Kind: kind, Reader: describe(r), Writer: describe(w)})
}

// resolves reports, without recording, whether w resolves to r.
func resolves(r, w avro.Schema) bool {
	return len(Resolve(r, w)) == 0
}

func (c *resolver) resolve(path string, r, w avro.Schema) {
	r, w = deref(r), deref(w)
	if wu, ok := w.(*avro.UnionSchema); ok {
		// Every branch the writer may have used must be readable.
		for _, b := range wu.Types() {
			if _, ok := r.(*avro.UnionSchema); ok {
				if !unionHas(r.(*avro.UnionSchema), b) {
					c.add(path, "union-branch-not-readable", r, b)
				}
				continue
			}
			if !resolves(r, b) {
				if len(wu.Types()) > 1 {
					c.add(path, "union-branch-not-readable", r, b)
				} else {
					c.resolve(path, r, b)
				}
			}
		}
		return
	}
	if ru, ok := r.(*avro.UnionSchema); ok {
		if !unionHas(ru, w) {
			c.add(path, "type-not-in-union", r, w)
		}
		return
	}
	if r.Type() != w.Type() {
		if !promotes(w.Type(), r.Type()) {
			c.add(path, "type-changed", r, w)
		}
		return
	}
	switch rs := r.(type) {
	case *avro.RecordSchema:
		ws := w.(*avro.RecordSchema)
		if !namesMatch(rs, ws) {
			c.add(path, "name-changed", r, w)
			return
		}
		key := [2]string{rs.FullName(), ws.FullName()}
		if c.seen[key] {
			return
		}
		c.seen[key] = true
		defer delete(c.seen, key)
		for _, rf := range rs.Fields() {
			fp := path + "." + rf.Name()
			wf := writerField(ws, rf)
			if wf == nil {
				if !rf.HasDefault() {
					c.out = append(c.out, Incompatibility{Path: fp, Kind: "missing-field-without-default", Reader: describe(rf.Type()), readerType: rf.Type()})
				}
				continue
			}
			c.resolve(fp, rf.Type(), wf.Type())
		}
	case *avro.EnumSchema:
		ws := w.(*avro.EnumSchema)
		if !namesMatch(rs, ws) {
			c.add(path, "name-changed", r, w)
			return
		}
		if rs.HasDefault() {
			return
		}
		for _, sym := range ws.Symbols() {
			if !slices.Contains(rs.Symbols(), sym) {
				c.out = append(c.out, Incompatibility{Path: path, Kind: "enum-symbol-unknown", Reader: describe(r), Writer: sym})
			}
		}
	case *avro.FixedSchema:
		ws := w.(*avro.FixedSchema)
		if !namesMatch(rs, ws) {
			c.add(path, "name-changed", r, w)
		} else if rs.Size() != ws.Size() {
			c.add(path, "fixed-size-changed", r, w)
		}
	case *avro.ArraySchema:
		c.resolve(path+"[]", rs.Items(), w.(*avro.ArraySchema).Items())
	case *avro.MapSchema:
		c.resolve(path+"{}", rs.Values(), w.(*avro.MapSchema).Values())
	}
}

// unionHas reports whether some branch of u reads data written as w.
func unionHas(u *avro.UnionSchema, w avro.Schema) bool {
	for _, b := range u.Types() {
		if resolves(b, w) {
			return true
		}
	}
	return false
}

// promotes lists the specification's promotions, writer to reader.
func promotes(w, r avro.Type) bool {
	switch w {
	case avro.Int:
		return r == avro.Long || r == avro.Float || r == avro.Double
	case avro.Long:
		return r == avro.Float || r == avro.Double
	case avro.Float:
		return r == avro.Double
	case avro.String:
		return r == avro.Bytes
	case avro.Bytes:
		return r == avro.String
	}
	return false
}

// namesMatch: the same unqualified name, or the writer's full name among
// the reader's aliases. A namespace change alone resolves.
func namesMatch(r, w avro.NamedSchema) bool {
	if r.Name() == w.Name() {
		return true
	}
	for _, a := range r.Aliases() {
		if a == w.FullName() || a == w.Name() {
			return true
		}
	}
	return false
}

// writerField finds the writer's field for a reader field, by name or by
// one of the reader field's aliases.
func writerField(w *avro.RecordSchema, rf *avro.Field) *avro.Field {
	for _, wf := range w.Fields() {
		if wf.Name() == rf.Name() {
			return wf
		}
	}
	for _, a := range rf.Aliases() {
		for _, wf := range w.Fields() {
			if wf.Name() == a {
				return wf
			}
		}
	}
	return nil
}

// describe renders a schema in a few words for messages.
func describe(s avro.Schema) string {
	if s == nil {
		return ""
	}
	s = deref(s)
	switch t := s.(type) {
	case *avro.RecordSchema:
		return "record " + t.Name()
	case *avro.EnumSchema:
		return "enum " + t.Name()
	case *avro.FixedSchema:
		return fmt.Sprintf("fixed %s(%d)", t.Name(), t.Size())
	case *avro.ArraySchema:
		return "array<" + describe(t.Items()) + ">"
	case *avro.MapSchema:
		return "map<" + describe(t.Values()) + ">"
	case *avro.UnionSchema:
		parts := make([]string, len(t.Types()))
		for i, b := range t.Types() {
			parts[i] = describe(b)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *avro.PrimitiveSchema:
		if l := t.Logical(); l != nil {
			return string(t.Type()) + " (" + string(l.Type()) + ")"
		}
	}
	return string(s.Type())
}

// explain turns an incompatibility found in one direction into a problem
// with the readers and writers it breaks and a fix.
func explain(direction, against string, in Incompatibility) Problem {
	p := Problem{Direction: direction, Against: against, Path: in.Path, Kind: in.Kind}
	var breaks string
	if direction == Backward {
		breaks = fmt.Sprintf("breaks BACKWARD: readers of the new schema cannot read %s records", against)
	} else {
		breaks = fmt.Sprintf("breaks FORWARD: readers of %s cannot read records written with the new schema", against)
	}
	where, root := place(in.Path)
	switch in.Kind {
	case "missing-field-without-default":
		explainMissingField(&p, direction, against, breaks, in)
	case "type-changed":
		explainTypeChanged(&p, direction, breaks, where, in)
	case "type-not-in-union":
		p.Message = fmt.Sprintf("%s is now %s, which has no branch for %s: this %s", where, in.Reader, in.Writer, breaks)
		if direction == Forward {
			p.Message = fmt.Sprintf("%s is now %s, which %s's union %s has no branch for: this %s", where, in.Writer, against, in.Reader, breaks)
		}
		p.Fix = "keep a union branch for the old type"
	case "union-branch-not-readable":
		if direction == Backward {
			p.Kind = "union-branch-removed"
			p.Message = fmt.Sprintf("%s no longer accepts %s (the new type is %s): this %s", where, in.Writer, in.Reader, breaks)
			p.Fix = "keep the branch; a field that was nullable must stay nullable"
		} else {
			p.Kind = "union-branch-added"
			p.Message = fmt.Sprintf("%s may now hold %s, which %s's %s cannot read: this %s", where, in.Writer, against, in.Reader, breaks)
			p.Fix = "do not add union branches under a FORWARD or FULL level; add a new optional field instead"
		}
	case "enum-symbol-unknown":
		enum := where + " (" + in.Reader + ")"
		if direction == Backward {
			p.Kind = "enum-symbol-removed"
			p.Message = fmt.Sprintf("%s no longer has symbol %s: this %s that carry it", enum, in.Writer, breaks)
			p.Fix = "keep the symbol, or give the enum a \"default\" symbol"
		} else {
			p.Kind = "enum-symbol-added"
			p.Message = fmt.Sprintf("symbol %s added to %s, which %s's enum lacks and has no enum default for: this %s", in.Writer, enum, against, breaks)
			p.Fix = "declare an enum \"default\" symbol in a release before the one that adds symbols"
		}
	case "name-changed":
		renamed := "the type of " + where
		if root {
			renamed = where
		}
		p.Message = fmt.Sprintf("%s renamed from %s to %s: this %s", renamed, before(direction, in), after(direction, in), breaks)
		p.Fix = "keep the name, or list the old full name in the new schema's \"aliases\" (this fixes BACKWARD only: old readers know no alias)"
	case "fixed-size-changed":
		p.Message = fmt.Sprintf("%s changed size from %s to %s: this %s", where, before(direction, in), after(direction, in), breaks)
		p.Fix = "keep the size; add a new field for the new size"
	default:
		p.Message = fmt.Sprintf("%s: %s (reader %s, writer %s): this %s", where, in.Kind, in.Reader, in.Writer, breaks)
		p.Fix = "keep the old shape"
	}
	return p
}

// place names where in a schema a path is, for messages: "field `a.b`",
// "the items of field `tags`", or, at the top level, "the schema"; root
// reports the top level itself.
func place(path string) (where string, root bool) {
	i := strings.IndexAny(path, ".[{")
	if i < 0 {
		return "the schema", true
	}
	rest, of := path[i:], ""
	for {
		if r, ok := strings.CutSuffix(rest, "[]"); ok {
			rest, of = r, of+"the items of "
		} else if r, ok := strings.CutSuffix(rest, "{}"); ok {
			rest, of = r, of+"the values of "
		} else {
			break
		}
	}
	if rest == "" {
		return of + "the schema", false
	}
	return of + "field `" + strings.TrimPrefix(rest, ".") + "`", false
}

func explainMissingField(p *Problem, direction, against, breaks string, in Incompatibility) {
	field := in.Path[strings.Index(in.Path, ".")+1:]
	if direction == Forward {
		p.Kind = "field-removed-without-default"
		p.Message = fmt.Sprintf("field `%s` removed, but %s declares it without a default: this %s", field, against, breaks)
		p.Fix = "keep the field (stop using it, but keep writing a value), or first release a version that gives it a default, and remove it once no reader lacks that default"
		return
	}
	p.Kind = "field-added-without-default"
	p.Message = fmt.Sprintf("field `%s` added without a default %s", field, breaks)
	p.Fix = "give it a default: for example make it nullable, " + nullable(in.readerType)
}

// nullable is the JSON that makes a field of type t nullable with a null
// default: t itself as written in the schema (a named type defined earlier
// by its name, one defined here in full), after "null" in a union.
func nullable(t avro.Schema) string {
	if t == nil || t.Type() == avro.Null {
		return `"default": null`
	}
	branches := []avro.Schema{t}
	if u, ok := t.(*avro.UnionSchema); ok {
		branches = u.Types()
	}
	parts := []string{`"null"`}
	for _, b := range branches {
		if b.Type() == avro.Null {
			continue
		}
		js, err := json.Marshal(b)
		if err != nil { // hamba marshals every schema it parsed
			js = []byte(strconv.Quote(describe(b)))
		}
		parts = append(parts, string(js))
	}
	return `"type": [` + strings.Join(parts, ", ") + `], "default": null`
}

func explainTypeChanged(p *Problem, direction, breaks, where string, in Incompatibility) {
	old, next := before(direction, in), after(direction, in)
	p.Message = fmt.Sprintf("%s changed from %s to %s: this %s", where, old, next, breaks)
	newField := ", or add a new field with the new type (with a default) and stop writing the old one"
	if !strings.Contains(in.Path, ".") {
		newField = "" // not in a record: no field to add beside it
	}
	p.Fix = "keep the type" + newField + "; only int→long→float→double and string↔bytes promote"
	if !promotes(avroType(in.Reader), avroType(in.Writer)) {
		return
	}
	// The writer's type promotes to the reader's the other way round only:
	// in BACKWARD the new schema narrowed the type (long to int), in
	// FORWARD it widened it (int to long).
	p.Kind = "type-promotes-one-way"
	if direction == Backward {
		p.Fix = fmt.Sprintf("keep %s: under a BACKWARD or FULL level a type may widen (int→long→float→double), never narrow, since readers of %s cannot read %s data%s", old, next, old, newField)
	} else {
		p.Fix = fmt.Sprintf("keep %s: under a FORWARD or FULL level a type may narrow (double→float→long→int), never widen, since readers of %s cannot read %s data%s", old, old, next, newField)
	}
}

// before and after name the old and new sides of a change: in BACKWARD the
// writer is the old schema, in FORWARD the reader is.
func before(direction string, in Incompatibility) string {
	if direction == Backward {
		return in.Writer
	}
	return in.Reader
}

func after(direction string, in Incompatibility) string {
	if direction == Backward {
		return in.Reader
	}
	return in.Writer
}

func avroType(desc string) avro.Type {
	t, _, _ := strings.Cut(desc, " ")
	return avro.Type(t)
}
