package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaSecurity is how clients authenticate to the cluster and encrypt the
// connection, with the names and values of Kafka's own client settings
// (security.protocol, sasl.mechanism).
type KafkaSecurity struct {
	Protocol              string `env:"KAFKA_SECURITY_PROTOCOL, default=PLAINTEXT"`
	SASLMechanism         string `env:"KAFKA_SASL_MECHANISM, default=PLAIN"`
	SASLUsername          string `env:"KAFKA_SASL_USERNAME"`
	SASLPassword          string `env:"KAFKA_SASL_PASSWORD"`
	TLSCAFile             string `env:"KAFKA_TLS_CA_FILE"`
	TLSCertFile           string `env:"KAFKA_TLS_CERT_FILE"`
	TLSKeyFile            string `env:"KAFKA_TLS_KEY_FILE"`
	TLSInsecureSkipVerify bool   `env:"KAFKA_TLS_INSECURE_SKIP_VERIFY, default=false"`
}

func (s KafkaSecurity) useTLS() bool { return s.Protocol == "SSL" || s.Protocol == "SASL_SSL" }
func (s KafkaSecurity) useSASL() bool {
	return s.Protocol == "SASL_PLAINTEXT" || s.Protocol == "SASL_SSL"
}

func (s KafkaSecurity) validate() []error {
	var errs []error
	switch s.Protocol {
	case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
	default:
		errs = append(errs, fmt.Errorf("KAFKA_SECURITY_PROTOCOL: %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", s.Protocol))
	}
	switch s.SASLMechanism {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		errs = append(errs, fmt.Errorf("KAFKA_SASL_MECHANISM: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", s.SASLMechanism))
	}
	if s.useSASL() && (s.SASLUsername == "" || s.SASLPassword == "") {
		errs = append(errs, errors.New("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: both are required with KAFKA_SECURITY_PROTOCOL="+s.Protocol))
	}
	// A setting the protocol does not use would be ignored: credentials or
	// certificates the operator believes in use.
	unused := func(name, what string) {
		errs = append(errs, fmt.Errorf("%s is set, but KAFKA_SECURITY_PROTOCOL=%s uses no %s: choose a protocol with it, or unset %s", name, s.Protocol, what, name))
	}
	if !s.useSASL() {
		for name, v := range map[string]string{"KAFKA_SASL_USERNAME": s.SASLUsername, "KAFKA_SASL_PASSWORD": s.SASLPassword} {
			if v != "" {
				unused(name, "SASL")
			}
		}
	}
	if !s.useTLS() {
		for name, v := range map[string]string{"KAFKA_TLS_CA_FILE": s.TLSCAFile, "KAFKA_TLS_CERT_FILE": s.TLSCertFile, "KAFKA_TLS_KEY_FILE": s.TLSKeyFile} {
			if v != "" {
				unused(name, "TLS")
			}
		}
		if s.TLSInsecureSkipVerify {
			unused("KAFKA_TLS_INSECURE_SKIP_VERIFY", "TLS")
		}
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		errs = append(errs, errors.New("KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE: set both for a client certificate, or neither"))
	}
	if s.useTLS() {
		if _, err := s.tlsConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func (s KafkaSecurity) tlsConfig() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: s.TLSInsecureSkipVerify} //nolint:gosec // opt-in, for test clusters
	if s.TLSCAFile != "" {
		pem, err := os.ReadFile(s.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %s holds no PEM certificate", s.TLSCAFile)
		}
	}
	if s.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// applySarama configures TLS and SASL on a sarama (watermill-kafka) client.
func (s KafkaSecurity) applySarama(c *sarama.Config) error {
	if s.useTLS() {
		tc, err := s.tlsConfig()
		if err != nil {
			return err
		}
		c.Net.TLS.Enable, c.Net.TLS.Config = true, tc
	}
	if !s.useSASL() {
		return nil
	}
	c.Net.SASL.Enable = true
	c.Net.SASL.Handshake = true
	c.Net.SASL.User, c.Net.SASL.Password = s.SASLUsername, s.SASLPassword
	switch s.SASLMechanism {
	case "PLAIN":
		c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{sha512: false} }
	case "SCRAM-SHA-512":
		c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{sha512: true} }
	}
	return nil
}

// FranzOpts are the franz-go client options for the same TLS and SASL.
func (s KafkaSecurity) FranzOpts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.useTLS() {
		tc, err := s.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if s.useSASL() {
		opts = append(opts, kgo.SASL(s.franzMechanism()))
	}
	return opts, nil
}

func (s KafkaSecurity) franzMechanism() sasl.Mechanism {
	switch s.SASLMechanism {
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha512Mechanism()
	}
	return plain.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsMechanism()
}

// scramClient gives sarama a SCRAM implementation by driving franz-go's
// (sarama ships none of its own): Begin starts a session, the first Step
// returns the client-first message, later Steps answer the server.
type scramClient struct {
	sha512  bool
	session sasl.Session
	first   []byte
	done    bool
}

func (c *scramClient) Begin(user, pass, authzID string) error {
	a := scram.Auth{User: user, Pass: pass, Zid: authzID}
	m := a.AsSha256Mechanism()
	if c.sha512 {
		m = a.AsSha512Mechanism()
	}
	session, first, err := m.Authenticate(context.Background(), "")
	c.session, c.first = session, first
	return err
}

func (c *scramClient) Step(challenge string) (string, error) {
	if c.first != nil {
		first := c.first
		c.first = nil
		return string(first), nil
	}
	done, resp, err := c.session.Challenge([]byte(challenge))
	c.done = done
	return string(resp), err
}

func (c *scramClient) Done() bool { return c.done }
