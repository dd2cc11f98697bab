package customers_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh fails when customer_gen.go no longer matches
// what `go generate` makes from schemas/customer.avsc.
func TestGeneratedCodeIsFresh(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "customer_gen.go")
	cmd := exec.Command("go", "tool", "avrogen", "-pkg", "customers", "-o", out, "-tags", "json:snake", "schemas/customer.avsc")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("avrogen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("customer_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("customer_gen.go is stale: run `go generate ./examples/customers` and commit the result")
	}
}
