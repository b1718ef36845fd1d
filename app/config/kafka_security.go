package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
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

// UseTLS reports whether the protocol encrypts the connection.
func (s KafkaSecurity) UseTLS() bool { return s.Protocol == "SSL" || s.Protocol == "SASL_SSL" }

// UseSASL reports whether the protocol authenticates with SASL.
func (s KafkaSecurity) UseSASL() bool {
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
	if s.UseSASL() && (s.SASLUsername == "" || s.SASLPassword == "") {
		errs = append(errs, errors.New("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: both are required with KAFKA_SECURITY_PROTOCOL="+s.Protocol))
	}
	// A setting the protocol does not use would be ignored: credentials or
	// certificates the operator believes in use.
	unused := func(name, what string) {
		errs = append(errs, fmt.Errorf("%s is set, but KAFKA_SECURITY_PROTOCOL=%s uses no %s: choose a protocol with it, or unset %s", name, s.Protocol, what, name))
	}
	if !s.UseSASL() {
		for name, v := range map[string]string{"KAFKA_SASL_USERNAME": s.SASLUsername, "KAFKA_SASL_PASSWORD": s.SASLPassword} {
			if v != "" {
				unused(name, "SASL")
			}
		}
	}
	if !s.UseTLS() {
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
	if s.UseTLS() {
		if _, err := s.TLSConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// TLSConfig is the TLS client configuration of KAFKA_TLS_*.
func (s KafkaSecurity) TLSConfig() (*tls.Config, error) {
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
