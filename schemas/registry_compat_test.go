package schemas_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/schemas"
)

// realRegistry returns a client for ECST_TEST_SCHEMA_REGISTRY_URL, the
// real Confluent-compatible registry that `make test-registry` starts.
func realRegistry(t *testing.T) *schemas.Registry {
	t.Helper()
	url := os.Getenv("ECST_TEST_SCHEMA_REGISTRY_URL")
	if url == "" {
		t.Skip("ECST_TEST_SCHEMA_REGISTRY_URL is not set: `make test-registry` runs this against a real registry")
	}
	r, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(url)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// registryVerdict registers history in a fresh subject at level, then
// tries to register next: the registry's verdict is whether it accepts it.
func registryVerdict(ctx context.Context, t *testing.T, r *schemas.Registry, subject, level string, history []string, next string) bool {
	t.Helper()
	cl := r.Client()
	// Register the history first (subjects start at the registry's global
	// level; scripts/registry.sh leaves Apicurio's at NONE), then switch to
	// the level under test: the history need not be compatible under it.
	for i, h := range history {
		if i > 0 {
			if err := r.SetCompatibility(ctx, subject, schemas.None); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cl.RegisterSchema(ctx, subject, sr.Schema{Schema: h}, -1, -1); err != nil {
			t.Fatalf("register history in %s: %v", subject, err)
		}
	}
	if err := r.SetCompatibility(ctx, subject, level); err != nil {
		t.Fatal(err)
	}
	_, err := r.Register(ctx, subject, next)
	switch {
	case err == nil:
		return true
	case errors.Is(err, schemas.ErrIncompatible):
		return false
	}
	t.Fatalf("register in %s: %v", subject, err)
	return false
}

// TestMatrixAgreesWithRegistry asks a real registry for every verdict of
// the compatibility matrix and of the transitive cases.
func TestMatrixAgreesWithRegistry(t *testing.T) {
	t.Parallel()
	r := realRegistry(t)
	ctx := context.Background()
	run := fmt.Sprint(time.Now().UnixNano())
	disagree := 0
	for i, c := range changes {
		for _, level := range schemas.Levels {
			subject := fmt.Sprintf("matrix-%s-%d-%s", run, i, strings.ToLower(level))
			got := registryVerdict(ctx, t, r, subject, level, []string{c.old}, c.new)
			if want := expected(c, level); got != want {
				disagree++
				t.Errorf("%s under %s: the registry says compatible=%v, ecst says %v", c.name, level, got, want)
			}
		}
	}
	t.Logf("%d verdicts compared, %d disagreements", len(changes)*len(schemas.Levels), disagree)
}
