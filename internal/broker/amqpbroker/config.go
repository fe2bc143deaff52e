package amqpbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults for the zero values of Config. They are exported so that the
// configuration layer and the README can quote them instead of repeating the
// numbers.
const (
	// DefaultExchange is the exchange used when Config.Exchange is empty; it
	// matches the default of PARLEY_AMQP_EXCHANGE.
	DefaultExchange = "parley.messages"

	// DefaultPrefetch bounds how many unacknowledged deliveries RabbitMQ
	// pushes to one gateway before waiting for acks: enough to keep the pipe
	// full without letting a stalled gateway hoard a large backlog in memory.
	DefaultPrefetch = 512

	// DefaultQueueMaxLength caps a gateway's queue. Past it RabbitMQ drops
	// the oldest message (drop-head): a gateway that far behind repairs from
	// the store anyway, and the broker must not run out of memory for it.
	DefaultQueueMaxLength = 100000

	// DefaultBackoffBase is the first reconnect delay ceiling.
	DefaultBackoffBase = 100 * time.Millisecond

	// DefaultBackoffCap is the largest reconnect delay ceiling: small, so a
	// gateway is back within a couple of seconds of RabbitMQ returning.
	DefaultBackoffCap = 2 * time.Second
)

// Config says which RabbitMQ to use and how. The zero value of every field but
// URL means its documented default.
type Config struct {
	// URL of RabbitMQ, amqp:// or amqps:// (PARLEY_AMQP_URL). Required.
	URL string

	// Exchange is the fanout exchange every gateway of one deployment
	// shares. Deployments (and tests) that share a RabbitMQ use different
	// names so they do not hear each other. Zero value: DefaultExchange.
	Exchange string

	// GatewayID names this gateway in connection names ("parley <id>
	// publish" and "parley <id> consume"), so that operators can tell the
	// connections apart in the management UI and rabbitmqctl. Zero value:
	// the host name.
	GatewayID string

	// Prefetch is the basic.qos prefetch count of the consumer. Zero value:
	// DefaultPrefetch. At most 65535.
	Prefetch int

	// QueueMaxLength is the x-max-length of this gateway's queue. Zero
	// value: DefaultQueueMaxLength.
	QueueMaxLength int

	// Logger receives link state changes and reconnect attempts; it should
	// already name the gateway (the broker adds the exchange). Zero value:
	// logs are discarded.
	Logger *slog.Logger

	// BackoffBase and BackoffCap bound the reconnect delays: before attempt
	// n (from 0) the supervisor sleeps a uniformly random duration in
	// [0, min(BackoffCap, BackoffBase*2^n)] ("full jitter"), so that many
	// gateways losing RabbitMQ at once do not reconnect in lockstep. Zero
	// values: DefaultBackoffBase and DefaultBackoffCap.
	BackoffBase time.Duration
	BackoffCap  time.Duration
}

// withDefaults returns c with its zero values replaced by the defaults, or an
// error saying which field is unusable.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("amqpbroker: config: URL is empty")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		// The URL may carry a password: say what is wrong, not what it is.
		return c, fmt.Errorf("amqpbroker: config: invalid URL: %w", err)
	}
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.GatewayID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		c.GatewayID = host
	}
	switch {
	case c.Prefetch < 0 || c.Prefetch > math.MaxUint16:
		return c, fmt.Errorf("amqpbroker: config: Prefetch %d is outside 0..%d", c.Prefetch, math.MaxUint16)
	case c.Prefetch == 0:
		c.Prefetch = DefaultPrefetch
	}
	switch {
	case c.QueueMaxLength < 0:
		return c, fmt.Errorf("amqpbroker: config: QueueMaxLength %d is negative", c.QueueMaxLength)
	case c.QueueMaxLength == 0:
		c.QueueMaxLength = DefaultQueueMaxLength
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BackoffBase < 0 || c.BackoffCap < 0 {
		return c, errors.New("amqpbroker: config: backoff bounds must not be negative")
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffCap == 0 {
		c.BackoffCap = max(DefaultBackoffCap, c.BackoffBase)
	}
	if c.BackoffCap < c.BackoffBase {
		return c, fmt.Errorf("amqpbroker: config: BackoffCap %v is below BackoffBase %v", c.BackoffCap, c.BackoffBase)
	}
	return c, nil
}
