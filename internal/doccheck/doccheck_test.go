package doccheck_test

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README's Go blocks from the examples they name")

// root is the module's root directory.
const root = "../.."

// goBlock matches a README Go block and the comment before it that names
// its source: <!-- example: producer/example_test.go run setTier -->.
var goBlock = regexp.MustCompile("(?s)(<!-- example: ([^ ]+) ([^>]+?) -->\n)?```go\n(.*?)```\n")

// TestREADMEGoBlocks: every Go block of README.md is preceded by a comment
// naming a runnable example's file and functions, and is those functions'
// source, doc comments included. `go test ./internal/doccheck -update`
// rewrites the blocks from the examples.
func TestREADMEGoBlocks(t *testing.T) {
	readmePath := filepath.Join(root, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	var failed bool
	out := goBlock.ReplaceAllFunc(readme, func(m []byte) []byte {
		blocks++
		sub := goBlock.FindSubmatch(m)
		if len(sub[1]) == 0 {
			t.Errorf("README.md: a Go block names no example; put <!-- example: FILE FUNC... --> before it, and the code in that example:\n%s", m)
			failed = true
			return m
		}
		file, funcs := string(sub[2]), strings.Fields(string(sub[3]))
		want, err := funcSource(filepath.Join(root, file), funcs)
		if err != nil {
			t.Errorf("README.md: %v", err)
			failed = true
			return m
		}
		if string(sub[4]) != want {
			if !*update {
				t.Errorf("README.md: the block from %s %s is not that example's code (go test ./internal/doccheck -update rewrites it); want:\n%s", file, strings.Join(funcs, " "), want)
			}
			return []byte(string(sub[1]) + "```go\n" + want + "```\n")
		}
		return m
	})
	if blocks == 0 {
		t.Fatal("README.md has no Go block: has the pattern gone stale?")
	}
	if *update && !failed && !bytes.Equal(out, readme) {
		if err := os.WriteFile(readmePath, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md rewritten")
	}
}

// funcSource returns the named top-level functions of a Go file, each with
// its doc comment, separated by blank lines.
func funcSource(file string, names []string) (string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, name := range names {
		var found *ast.FuncDecl
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == name {
				found = fd
			}
		}
		if found == nil {
			return "", fmt.Errorf("%s has no function %s", file, name)
		}
		start := found.Pos()
		if found.Doc != nil {
			start = found.Doc.Pos()
		}
		parts = append(parts, string(src[fset.Position(start).Offset:fset.Position(found.End()).Offset]))
	}
	return strings.Join(parts, "\n\n") + "\n", nil
}

// goFiles returns the module's Go files other than tests, relative to
// root, with slashes, outside testdata and other modules.
func goFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // another module (bench/watermill)
			}
			return nil
		}
		if strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// packageDirs returns the directories of the module's packages.
func packageDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, f := range goFiles(t) {
		if dir := path.Dir(f); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// TestExportedFieldsDocumented: every exported field of an exported struct
// in the library (every package but internal ones; generated code aside)
// has a comment, which says what the field is for and its default.
func TestExportedFieldsDocumented(t *testing.T) {
	t.Parallel()
	fields := 0
	for _, name := range goFiles(t) {
		if slices.Contains(strings.Split(path.Dir(name), "/"), "internal") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, name), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if ast.IsGenerated(f) {
			continue
		}
		for _, missing := range undocumentedFields(f, &fields) {
			t.Errorf("%s: exported field %s has no comment: say what it is for and its default", name, missing)
		}
	}
	if fields < 100 {
		t.Fatalf("found only %d exported fields: has the walk gone wrong?", fields)
	}
}

// undocumentedFields lists Type.Field for the exported fields of f's
// exported structs that have neither a comment above nor one at the end of
// the line, and counts every exported field it looks at.
func undocumentedFields(f *ast.File, count *int) []string {
	var out []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			st, ok := ts.Type.(*ast.StructType)
			if !ok || !ts.Name.IsExported() {
				continue
			}
			for _, field := range st.Fields.List {
				names := fieldNames(field)
				if len(names) == 0 {
					continue
				}
				*count += len(names)
				if field.Doc == nil && field.Comment == nil {
					out = append(out, ts.Name.Name+"."+strings.Join(names, ", "))
				}
			}
		}
	}
	return out
}

// fieldNames returns a field's exported names; an embedded field's name is
// its type's.
func fieldNames(field *ast.Field) []string {
	var names []string
	for _, n := range field.Names {
		if n.IsExported() {
			names = append(names, n.Name)
		}
	}
	if len(field.Names) == 0 {
		typ := field.Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		if sel, ok := typ.(*ast.SelectorExpr); ok {
			typ = sel.Sel
		}
		if id, ok := typ.(*ast.Ident); ok && id.IsExported() {
			names = append(names, id.Name)
		}
	}
	return names
}

// TestArchitecturePackageMap: docs/architecture.md's package map lists
// every package of the module (an example's packages under the example's
// directory), and no package that is gone.
func TestArchitecturePackageMap(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Packages\n")
	if !ok {
		t.Fatal("docs/architecture.md has no ## Packages section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	listed := map[string]bool{}
	name := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			listed[m[1]] = true
		}
	}
	want := map[string]bool{}
	for _, dir := range packageDirs(t) {
		if parts := strings.Split(dir, "/"); parts[0] == "examples" && len(parts) > 2 {
			dir = strings.Join(parts[:2], "/")
		}
		want[dir] = true
		if !listed[dir] {
			t.Errorf("docs/architecture.md's package map does not list %s: add a row (or add it to a row) saying what it is for", dir)
		}
	}
	for p := range listed {
		if !want[p] {
			t.Errorf("docs/architecture.md's package map lists %s, which is not a package", p)
		}
	}
}
