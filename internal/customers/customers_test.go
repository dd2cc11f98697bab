package customers_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestSameAsTheExample: the binary's customer entity is the example's,
// file for file (examples/customers keeps its generated type fresh).
func TestSameAsTheExample(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"schemas/customer.avsc", "ecst.yaml", "customers.sql", "customer_gen.go"} {
		ours, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		example, err := os.ReadFile(filepath.Join("..", "..", "examples", "customers", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, example) {
			t.Errorf("internal/customers/%s differs from examples/customers/%s: copy the example's", f, f)
		}
	}
}
