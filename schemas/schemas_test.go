package schemas_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"go.uber.org/goleak"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/schemas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const customer = `{"type":"record","name":"C","fields":[{"name":"id","type":"string"}]}`

func TestWireRoundTrip(t *testing.T) {
	t.Parallel()
	for _, id := range []int{1, 255, 256, 1 << 24, 1<<31 - 1} {
		b := append(schemas.AppendWire(nil, id), 'x')
		got, payload, err := schemas.DecodeWire(b)
		if err != nil || got != id || string(payload) != "x" {
			t.Errorf("id %d: got %d %q %v", id, got, payload, err)
		}
		// The same bytes franz-go's serde writes.
		var h sr.ConfluentHeader
		want, _ := h.AppendEncode(nil, id, nil)
		if !bytes.Equal(b[:5], want) {
			t.Errorf("id %d: header % x, franz-go writes % x", id, b[:5], want)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0, 0, 1}, {1, 0, 0, 0, 1}} {
		if _, _, err := schemas.DecodeWire(bad); !errors.Is(err, schemas.ErrNotWireFormat) {
			t.Errorf("DecodeWire(% x) = %v", bad, err)
		}
	}
}

func FuzzDecodeWire(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, payload, err := schemas.DecodeWire(b)
		if err != nil {
			return
		}
		if !bytes.Equal(append(schemas.AppendWire(nil, id), payload...), b) {
			t.Fatalf("round trip of % x changed it", b)
		}
	})
}

func newRegistry(t *testing.T, url string, user, pass string) *schemas.Registry {
	t.Helper()
	r, err := schemas.NewRegistry(config.Registry{URL: config.SecretURL(url), Username: user, Password: config.Secret(pass)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestLookupAndRegister(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := srfake.New()
	defer fake.Close()
	r := newRegistry(t, fake.URL(), "", "")
	if _, err := r.Lookup(ctx, "c-value", customer); !errors.Is(err, schemas.ErrNotRegistered) {
		t.Fatalf("lookup of an unknown subject = %v", err)
	}
	id, err := r.Register(ctx, "c-value", customer)
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.Register(ctx, "c-value", customer)
	if err != nil || again != id {
		t.Fatalf("re-register = %d, %v; want %d", again, err, id)
	}
	got, err := r.Lookup(ctx, "c-value", customer)
	if err != nil || got != id {
		t.Fatalf("lookup = %d, %v; want %d", got, err, id)
	}
	if _, err := r.Lookup(ctx, "c-value", `{"type":"record","name":"D","fields":[]}`); !errors.Is(err, schemas.ErrNotRegistered) {
		t.Fatalf("lookup of another schema = %v", err)
	}
	s, err := r.SchemaByID(ctx, id)
	if err != nil || s.(interface{ Name() string }).Name() != "C" {
		t.Fatalf("SchemaByID = %v, %v", s, err)
	}
}

func TestRegistryFaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := srfake.New(srfake.WithAuth("Basic ZWNzdDpyaWdodA==")) // ecst:right
	defer fake.Close()

	_, err := newRegistry(t, fake.URL(), "ecst", "wrong-hunter2").Lookup(ctx, "c-value", customer)
	if !errors.Is(err, schemas.ErrUnauthorized) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("wrong password: %v", err)
	}
	_, err = newRegistry(t, fake.URL(), "ecst", "right").Lookup(ctx, "c-value", customer)
	if !errors.Is(err, schemas.ErrNotRegistered) {
		t.Fatalf("right password, unknown subject: %v", err)
	}
	// Credentials given in the URL are sent as basic auth.
	_, err = newRegistry(t, strings.Replace(fake.URL(), "http://", "http://ecst:right@", 1), "", "").Lookup(ctx, "c-value", customer)
	if !errors.Is(err, schemas.ErrNotRegistered) {
		t.Fatalf("credentials in the URL: %v", err)
	}
	_, err = newRegistry(t, "http://ecst:hunter2@127.0.0.1:1", "", "").Lookup(ctx, "c-value", customer)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("unreachable registry: %v", err)
	}
}

func TestRegisterInvalidSchema(t *testing.T) {
	t.Parallel()
	fake := srfake.New()
	defer fake.Close()
	_, err := newRegistry(t, fake.URL(), "", "").Register(context.Background(), "c-value", `{"type":`)
	if err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("err = %v", err)
	}
}
