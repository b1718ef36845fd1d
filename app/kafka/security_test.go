package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/messages"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the server's TLS config and the certificate's PEM file.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(file, certPEM, 0o600))
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, file
}

// TestKafkaSecurity connects both client stacks — franz-go (topic creation)
// and sarama (Watermill publisher and subscriber) — to a broker that
// requires each SASL mechanism, over TLS for one of them.
func TestKafkaSecurity(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	cases := []struct {
		protocol, mechanism string
		tls                 bool
	}{
		{"SASL_PLAINTEXT", "PLAIN", false},
		{"SASL_PLAINTEXT", "SCRAM-SHA-256", false},
		{"SASL_SSL", "SCRAM-SHA-512", true},
		{"SSL", "", true},
	}
	for _, c := range cases {
		t.Run(c.protocol+" "+c.mechanism, func(t *testing.T) {
			opts := []kfake.Opt{kfake.NumBrokers(1)}
			if c.mechanism != "" {
				opts = append(opts, kfake.EnableSASL(), kfake.Superuser(c.mechanism, "alice", "s3cret"))
			}
			if c.tls {
				opts = append(opts, kfake.TLS(serverTLS))
			}
			cluster, err := kfake.NewCluster(opts...)
			require.NoError(t, err)
			defer cluster.Close()

			env := map[string]string{
				"ROUTER_HANDLERS": "simulate", "KAFKA_BOOTSTRAP_SERVERS": cluster.ListenAddrs()[0], "METRICS_ADDR": "127.0.0.1:0",
				"KAFKA_SECURITY_PROTOCOL": c.protocol,
			}
			if c.tls {
				env["KAFKA_TLS_CA_FILE"] = caFile
			}
			if c.mechanism != "" {
				env["KAFKA_SASL_MECHANISM"], env["KAFKA_SASL_USERNAME"], env["KAFKA_SASL_PASSWORD"] = c.mechanism, "alice", "s3cret"
			}
			cfg, err := load(env)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := app.New(ctx, cfg, telemetry.NewLogger("error"))
			require.NoError(t, err, "franz-go client creates the topics")
			defer a.Close()

			// Both publishers (sarama; franz-go for the simulator) and the
			// pipeline's subscriber (franz-go), through TLS and SASL.
			pub, err := a.Kafka.NewPublisher()
			require.NoError(t, err)
			defer pub.Close()
			bulk, err := a.Kafka.NewBulkPublisher()
			require.NoError(t, err)
			defer bulk.Close()
			for id, p := range map[string]message.Publisher{"m1": pub, "m2": bulk} {
				m := message.NewMessage(id, []byte("hello"))
				m.Metadata.Set(messages.KeyMetadata, "same-customer")
				require.NoError(t, p.Publish(cfg.Kafka.TopicRaw, m))
			}
			sub, err := a.Kafka.NewOrderedSubscriber("cg.security-test", nil)
			require.NoError(t, err)
			defer sub.Close()
			ch, err := sub.Subscribe(ctx, cfg.Kafka.TopicRaw)
			require.NoError(t, err)
			var got []string
			for len(got) < 2 {
				select {
				case m := <-ch:
					b, ok := messages.BatchOf(m)
					require.True(t, ok)
					for i := range b.Records {
						got = append(got, b.Records[i].Message(ctx).UUID)
					}
					m.Ack()
				case <-ctx.Done():
					t.Fatal("no message through the secured subscriber")
				}
			}
			require.ElementsMatch(t, []string{"m1", "m2"}, got)
		})
	}
}

func TestKafkaSecurityConfigErrors(t *testing.T) {
	for env, want := range map[string]string{
		"KAFKA_SECURITY_PROTOCOL=TLS":         "KAFKA_SECURITY_PROTOCOL",
		"KAFKA_SECURITY_PROTOCOL=SASL_SSL":    "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
		"KAFKA_TLS_CA_FILE=/nonexistent/ca":   "KAFKA_TLS_CA_FILE",
		"KAFKA_SASL_MECHANISM=GSSAPI":         "KAFKA_SASL_MECHANISM",
		"KAFKA_TLS_CERT_FILE=/tmp/client.pem": "KAFKA_TLS_KEY_FILE",
	} {
		k, v, _ := strings.Cut(env, "=")
		m := map[string]string{k: v, "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
		if k == "KAFKA_SECURITY_PROTOCOL" && v == "SASL_SSL" {
			m = map[string]string{k: v}
		}
		if k == "KAFKA_TLS_CA_FILE" || k == "KAFKA_SASL_MECHANISM" {
			m["KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"
		}
		_, err := load(m)
		require.Error(t, err, env)
		require.Contains(t, err.Error(), want, env)
	}
}
