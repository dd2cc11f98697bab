package schemas

import (
	"fmt"

	"github.com/hamba/avro/v2"
)

// FieldChange is one field-level difference between two record schemas.
type FieldChange struct {
	Op   string `json:"op"`            // added, removed, changed
	Path string `json:"path"`          // Record.field.nested
	Old  string `json:"old,omitempty"` // the old type (with its default when removed); "" when added
	New  string `json:"new,omitempty"` // the new type (with its default when added); "" when removed
}

func (c FieldChange) String() string {
	switch c.Op {
	case "added":
		return fmt.Sprintf("+ %s: %s", c.Path, c.New)
	case "removed":
		return fmt.Sprintf("- %s: %s", c.Path, c.Old)
	}
	return fmt.Sprintf("~ %s: %s -> %s", c.Path, c.Old, c.New)
}

// Diff lists the field-level differences from old to next, descending
// into nested records (fields are matched by name).
func Diff(old, next avro.Schema) []FieldChange {
	var out []FieldChange
	diff(&out, rootName(next, old), deref(old), deref(next), map[string]bool{})
	return out
}

func diff(out *[]FieldChange, path string, old, next avro.Schema, seen map[string]bool) {
	or, ok1 := old.(*avro.RecordSchema)
	nr, ok2 := next.(*avro.RecordSchema)
	if !ok1 || !ok2 {
		if describeField(old) != describeField(next) {
			*out = append(*out, FieldChange{Op: "changed", Path: path, Old: describeField(old), New: describeField(next)})
		}
		return
	}
	if seen[nr.FullName()] {
		return
	}
	seen[nr.FullName()] = true
	if or.FullName() != nr.FullName() {
		*out = append(*out, FieldChange{Op: "changed", Path: path, Old: "record " + or.FullName(), New: "record " + nr.FullName()})
	}
	oldFields := map[string]*avro.Field{}
	for _, f := range or.Fields() {
		oldFields[f.Name()] = f
	}
	for _, f := range nr.Fields() {
		p := path + "." + f.Name()
		of, ok := oldFields[f.Name()]
		if !ok {
			*out = append(*out, FieldChange{Op: "added", Path: p, New: fieldSummary(f)})
			continue
		}
		delete(oldFields, f.Name())
		if fieldSummary(of) != fieldSummary(f) {
			if _, isRec := deref(f.Type()).(*avro.RecordSchema); isRec {
				diff(out, p, deref(of.Type()), deref(f.Type()), seen)
				continue
			}
			*out = append(*out, FieldChange{Op: "changed", Path: p, Old: fieldSummary(of), New: fieldSummary(f)})
		}
	}
	for _, f := range or.Fields() {
		if _, gone := oldFields[f.Name()]; gone {
			*out = append(*out, FieldChange{Op: "removed", Path: path + "." + f.Name(), Old: fieldSummary(f)})
		}
	}
}

// fieldSummary is a field's type and default, as diff shows them.
func fieldSummary(f *avro.Field) string {
	s := describeField(f.Type())
	if f.HasDefault() {
		s += fmt.Sprintf(" (default %v)", defaultText(f.Default()))
	}
	return s
}

func defaultText(v any) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprint(v)
}

// describeField is a schema's full shape, for comparing fields.
func describeField(s avro.Schema) string {
	s = deref(s)
	if r, ok := s.(*avro.RecordSchema); ok {
		return "record " + r.FullName() + " " + r.String()
	}
	if e, ok := s.(*avro.EnumSchema); ok {
		return fmt.Sprintf("enum %s %v", e.Name(), e.Symbols())
	}
	return describe(s)
}
