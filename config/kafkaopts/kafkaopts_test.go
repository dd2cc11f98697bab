package kafkaopts_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/internal/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// roundTrip creates a topic, produces a record and reads it back with a
// client built only from cfg's options.
func roundTrip(t *testing.T, k config.Kafka) error {
	t.Helper()
	opts, err := kafkaopts.Client(k)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := fmt.Sprintf("config-test-%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequestRetries(2), kgo.RetryTimeout(5*time.Second))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := kafkatest.CreateTopic(ctx, cl, topic, 1, nil); err != nil {
		return err
	}
	defer kadm.NewClient(cl).DeleteTopic(context.Background(), topic) //nolint:errcheck
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
		return err
	}
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		return err
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Value) != "v" {
		return fmt.Errorf("read back %d records", len(recs))
	}
	return nil
}

func TestKafkaClientOpts(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t)
	if err := roundTrip(t, config.Kafka{Brokers: b.Seeds, ClientID: "ecst-config-test"}); err != nil {
		t.Fatal(err)
	}
}

func TestKafkaSASL(t *testing.T) {
	t.Parallel()
	b := kafkatest.NewSASL(t)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			k := config.Kafka{Brokers: b.Seeds, SASL: config.SASL{Mechanism: mech, Username: kafkatest.SASLUser, Password: kafkatest.SASLPassword}}
			if err := roundTrip(t, k); err != nil {
				t.Fatalf("correct credentials: %v", err)
			}
			k.SASL.Password = "wrong-hunter2"
			err := roundTrip(t, k)
			if err == nil {
				t.Fatal("wrong password accepted")
			}
			// A real broker answers SASL_AUTHENTICATION_FAILED; kfake
			// closes the connection. Either way nothing got through.
			t.Logf("wrong password refused: %v (SASL_AUTHENTICATION_FAILED: %v)", err, errors.Is(err, kerr.SaslAuthenticationFailed))
			if strings.Contains(err.Error(), "wrong-hunter2") {
				t.Fatalf("error prints the password: %v", err)
			}
		})
	}
}

// TestKafkaTLS runs on an in-process kfake listener with a certificate made
// here, against either broker setting: it tests ecst's TLS client
// configuration (CA file, client certificate), not the broker's.
func TestKafkaTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caPEM, caCert, caKey := makeCA(t)
	srvCert := makeLeaf(t, caCert, caKey, "127.0.0.1")
	cliCert := makeLeaf(t, caCert, caKey, "client")
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, caPEM, 0o600)
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writeLeaf(t, cliCert, certFile, keyFile)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{srvCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ok := config.Kafka{Brokers: c.ListenAddrs(), TLS: config.TLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}}
	if err := roundTrip(t, ok); err != nil {
		t.Fatalf("TLS with CA and client certificate: %v", err)
	}
	noClientCert := config.Kafka{Brokers: c.ListenAddrs(), TLS: config.TLS{CAFile: caFile}}
	if err := roundTrip(t, noClientCert); err == nil {
		t.Fatal("broker requiring a client certificate accepted none")
	}
	untrusted := config.Kafka{Brokers: c.ListenAddrs(), TLS: config.TLS{Enabled: true, CertFile: certFile, KeyFile: keyFile}}
	if err := roundTrip(t, untrusted); err == nil {
		t.Fatal("a server certificate from an unknown CA was trusted")
	}
}

func makeCA(t *testing.T) ([]byte, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ecst test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, key
}

func makeLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writeLeaf(t *testing.T, c tls.Certificate, certFile, keyFile string) {
	t.Helper()
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}
