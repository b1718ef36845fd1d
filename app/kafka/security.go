package kafka

import (
	"context"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/heartbeat/heartbeat/app/config"
)

// applySarama configures TLS and SASL on a sarama (watermill-kafka) client.
func applySarama(s config.KafkaSecurity, c *sarama.Config) error {
	if s.UseTLS() {
		tc, err := s.TLSConfig()
		if err != nil {
			return err
		}
		c.Net.TLS.Enable, c.Net.TLS.Config = true, tc
	}
	if !s.UseSASL() {
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

// FranzOpts are the franz-go client options for the TLS and SASL of s.
func FranzOpts(s config.KafkaSecurity) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.UseTLS() {
		tc, err := s.TLSConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if s.UseSASL() {
		opts = append(opts, kgo.SASL(franzMechanism(s)))
	}
	return opts, nil
}

func franzMechanism(s config.KafkaSecurity) sasl.Mechanism {
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
