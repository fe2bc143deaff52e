// Package config reads Parley's configuration from the environment.
//
// Every variable is a field of Config, with its default in the envDefault tag;
// README.md documents each one, and config_test.go fails when one is missing
// there.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config is everything a gateway can be told. The zero value is not useful;
// Load fills in the defaults.
type Config struct {
	// Addr is the HTTP listen address.
	Addr string `env:"PARLEY_ADDR" envDefault:":8080"`
	// AMQPURL selects RabbitMQ; empty means the in-process broker.
	AMQPURL string `env:"PARLEY_AMQP_URL"`
	// RedisURL selects Redis; empty means the in-memory store.
	RedisURL string `env:"PARLEY_REDIS_URL"`
	// AMQPExchange is the fanout exchange; deployments (and parallel tests)
	// that share a broker use different names so they never hear each other.
	AMQPExchange string `env:"PARLEY_AMQP_EXCHANGE" envDefault:"parley.messages"`
	// RedisPrefix starts every Redis key, for the same reason.
	RedisPrefix string `env:"PARLEY_REDIS_PREFIX" envDefault:"parley:"`
	// JWTSecret is the HS256 secret shared with the backend that mints
	// client tokens, used as raw bytes (at least 32). At most one of
	// JWTSecret, JWTPublicKeyFile and JWKSURL may be set; with none, tokens
	// are not accepted.
	JWTSecret string `env:"PARLEY_JWT_SECRET"`
	// JWTPublicKeyFile is a PEM file with the RSA (2048+ bits) or P-256
	// public key, or a certificate, that verifies RS256 or ES256 tokens.
	JWTPublicKeyFile string `env:"PARLEY_JWT_PUBLIC_KEY_FILE"`
	// JWKSURL is an identity provider's JSON Web Key Set (https; http only
	// on a loopback address), for RS256/ES256 tokens whose "kid" names one
	// of its keys.
	JWKSURL string `env:"PARLEY_JWKS_URL"`
	// JWKSRefresh is the least time between two fetches of the JWKS: a
	// token with an unknown "kid" triggers one, so this bounds what forged
	// tokens can make the gateway do.
	JWKSRefresh time.Duration `env:"PARLEY_JWKS_REFRESH" envDefault:"30s"`
	// JWTAudience, when set, must be among a token's "aud".
	JWTAudience string `env:"PARLEY_JWT_AUDIENCE"`
	// JWTIssuer, when set, must be a token's "iss".
	JWTIssuer string `env:"PARLEY_JWT_ISSUER"`
	// Guests lets a client without a token in under a name it picks. Unset
	// (nil) means true when no token key is configured and false when one
	// is; see GuestsAllowed.
	Guests *bool `env:"PARLEY_GUESTS"`
	// AllowedOrigins are extra Origin host patterns (path.Match syntax) that
	// may open a WebSocket; the gateway's own origin always may.
	AllowedOrigins []string `env:"PARLEY_ALLOWED_ORIGINS" envSeparator:","`
	// TrustedProxies are the networks (CIDRs) of the load balancers in
	// front, whose X-Forwarded-For header names the client. Empty: none; the
	// peer address is the client.
	TrustedProxies []string `env:"PARLEY_TRUSTED_PROXIES" envSeparator:","`
	// MaxConnsPerIP and MaxConnsPerUser cap one gateway's connections from
	// one client address and for one user.
	MaxConnsPerIP   int `env:"PARLEY_MAX_CONNS_PER_IP" envDefault:"500"`
	MaxConnsPerUser int `env:"PARLEY_MAX_CONNS_PER_USER" envDefault:"20"`
	// HandshakeTimeout bounds reading a request's headers and, after the
	// upgrade, the wait for the connection's first join.
	HandshakeTimeout time.Duration `env:"PARLEY_HANDSHAKE_TIMEOUT" envDefault:"10s"`
	// APIKey lets backends post to rooms (POST /api/rooms/{room}/messages);
	// empty disables that endpoint.
	APIKey string `env:"PARLEY_API_KEY"`
	// GatewayID names this gateway in logs, frames and metrics. Empty means
	// the host name plus a random suffix.
	GatewayID string `env:"PARLEY_GATEWAY_ID"`

	// MaxFrameBytes is the largest WebSocket message a client may send;
	// larger ones close the connection with 1009.
	MaxFrameBytes int64 `env:"PARLEY_MAX_FRAME_BYTES" envDefault:"16384"`
	// MaxTextBytes is the longest message text.
	MaxTextBytes int `env:"PARLEY_MAX_TEXT_BYTES" envDefault:"4000"`
	// SendQueueBytes bounds what may wait to be written to one client; a
	// client that falls further behind is disconnected with 1013.
	SendQueueBytes int `env:"PARLEY_SEND_QUEUE_BYTES" envDefault:"1048576"`
	// SendRate is how many messages per second one connection may send on
	// average, with bursts of SendBurst.
	SendRate  float64 `env:"PARLEY_SEND_RATE" envDefault:"10"`
	SendBurst int     `env:"PARLEY_SEND_BURST" envDefault:"20"`
	// MaxRoomsPerConn bounds how many rooms one connection may join.
	MaxRoomsPerConn int `env:"PARLEY_MAX_ROOMS_PER_CONN" envDefault:"50"`

	// JoinHistory is how many recent messages a join returns.
	JoinHistory int `env:"PARLEY_JOIN_HISTORY" envDefault:"50"`
	// HistoryMaxLen is how many messages a room keeps.
	HistoryMaxLen int `env:"PARLEY_HISTORY_MAX_LEN" envDefault:"10000"`
	// HistoryMaxAge is how long messages are kept, and how long an idle
	// room's history lives.
	HistoryMaxAge time.Duration `env:"PARLEY_HISTORY_MAX_AGE" envDefault:"168h"`

	// PresenceTTL is how long a gateway's presence entries live without a
	// refresh: a dead gateway's users leave within it. Every gateway of a
	// cluster must use the same.
	PresenceTTL time.Duration `env:"PARLEY_PRESENCE_TTL" envDefault:"30s"`
	// PresenceGrace is how long a dropped connection stays present, so that
	// a quick reconnect shows no leave and join.
	PresenceGrace time.Duration `env:"PARLEY_PRESENCE_GRACE" envDefault:"10s"`
	// StatsInterval is how often the gateway reports its counts to the
	// cluster statistics (GET /api/stats, /stats).
	StatsInterval time.Duration `env:"PARLEY_STATS_INTERVAL" envDefault:"5s"`
	// PresenceListMax is the largest room whose member list is sent to its
	// members; larger rooms get the count alone.
	PresenceListMax int `env:"PARLEY_PRESENCE_LIST_MAX" envDefault:"100"`

	// PingInterval is how often each client is pinged; it must stay below
	// the idle timeout of any proxy in front (nginx: 60s by default).
	PingInterval time.Duration `env:"PARLEY_PING_INTERVAL" envDefault:"25s"`
	// PongTimeout is how long a ping may go unanswered before the client is
	// taken for dead and closed.
	PongTimeout time.Duration `env:"PARLEY_PONG_TIMEOUT" envDefault:"15s"`
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration `env:"PARLEY_WRITE_TIMEOUT" envDefault:"10s"`
	// WriteDelay trades latency for CPU: messages to an idle client wait up
	// to this long so that those arriving meanwhile share its write.
	WriteDelay time.Duration `env:"PARLEY_WRITE_DELAY" envDefault:"0s"`
	// BatchWrites lets a gateway write a message to many clients with one
	// system call (io_uring) where the kernel allows it.
	BatchWrites bool `env:"PARLEY_BATCH_WRITES" envDefault:"true"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration `env:"PARLEY_SHUTDOWN_TIMEOUT" envDefault:"10s"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"PARLEY_LOG_LEVEL" envDefault:"info"`
	// LogFormat is text or json.
	LogFormat string `env:"PARLEY_LOG_FORMAT" envDefault:"text"`
}

// Load reads the configuration through getenv (os.Getenv in production, a
// map lookup in tests) and checks it. A variable set to the empty string
// counts as unset.
func Load(getenv func(string) string) (Config, error) {
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		return Config{}, fmt.Errorf("config fields: %w", err)
	}
	environ := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environ[p.Key] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: environ})
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", nameVariables(err))
	}
	if err := cfg.check(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// nameVariables rewrites the env library's parse errors, which name Go
// fields, to name the variables a user actually set.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[Config]()
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			errs = append(errs, e)
			continue
		}
		f, ok := t.FieldByName(pe.Name)
		if !ok {
			errs = append(errs, e)
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		errs = append(errs, fmt.Errorf("%s: %w", key, pe.Err))
	}
	return errors.Join(errs...)
}

// TrustedProxyPrefixes parses TrustedProxies: CIDRs, spaces around them
// allowed.
func (c Config) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Keys returns the name of every environment variable Config reads.
func Keys() []string {
	params, _ := env.GetFieldParams(&Config{})
	keys := make([]string, len(params))
	for i, p := range params {
		keys[i] = p.Key
	}
	return keys
}

// TokensConfigured reports whether a token key is set, that is whether
// clients may authenticate with a JWT.
func (c Config) TokensConfigured() bool {
	return c.JWTSecret != "" || c.JWTPublicKeyFile != "" || c.JWKSURL != ""
}

// GuestsAllowed resolves PARLEY_GUESTS: guests are the default only where
// there is no other way in, so that configuring tokens closes guest access
// unless the operator keeps it open on purpose.
func (c Config) GuestsAllowed() bool {
	if c.Guests != nil {
		return *c.Guests
	}
	return !c.TokensConfigured()
}

func (c Config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.AMQPURL != "" && c.RedisURL == "" {
		bad("PARLEY_AMQP_URL is set but PARLEY_REDIS_URL is not: gateways that share a broker must share " +
			"a store, or each would number a room's messages on its own; set PARLEY_REDIS_URL")
	}
	if c.AMQPURL != "" {
		if u, err := url.Parse(c.AMQPURL); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
			bad("PARLEY_AMQP_URL must be an amqp:// or amqps:// URL")
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			bad("PARLEY_REDIS_URL must be a redis://, rediss:// or unix:// URL")
		}
	}
	if c.AMQPExchange == "" {
		bad("PARLEY_AMQP_EXCHANGE must not be empty")
	}
	positive := map[string]int64{
		"PARLEY_MAX_FRAME_BYTES":    c.MaxFrameBytes,
		"PARLEY_MAX_TEXT_BYTES":     int64(c.MaxTextBytes),
		"PARLEY_SEND_QUEUE_BYTES":   int64(c.SendQueueBytes),
		"PARLEY_SEND_BURST":         int64(c.SendBurst),
		"PARLEY_MAX_ROOMS_PER_CONN": int64(c.MaxRoomsPerConn),
		"PARLEY_MAX_CONNS_PER_IP":   int64(c.MaxConnsPerIP),
		"PARLEY_MAX_CONNS_PER_USER": int64(c.MaxConnsPerUser),
		"PARLEY_HANDSHAKE_TIMEOUT":  int64(c.HandshakeTimeout),
		"PARLEY_JWKS_REFRESH":       int64(c.JWKSRefresh),
		"PARLEY_PRESENCE_TTL":       int64(c.PresenceTTL),
		"PARLEY_PRESENCE_GRACE":     int64(c.PresenceGrace),
		"PARLEY_PRESENCE_LIST_MAX":  int64(c.PresenceListMax),
		"PARLEY_JOIN_HISTORY":       int64(c.JoinHistory),
		"PARLEY_HISTORY_MAX_LEN":    int64(c.HistoryMaxLen),
		"PARLEY_HISTORY_MAX_AGE":    int64(c.HistoryMaxAge),
		"PARLEY_PING_INTERVAL":      int64(c.PingInterval),
		"PARLEY_PONG_TIMEOUT":       int64(c.PongTimeout),
		"PARLEY_WRITE_TIMEOUT":      int64(c.WriteTimeout),
		"PARLEY_SHUTDOWN_TIMEOUT":   int64(c.ShutdownTimeout),
	}
	for _, k := range slices.Sorted(maps.Keys(positive)) {
		if positive[k] <= 0 {
			bad("%s must be positive", k)
		}
	}
	keys := 0
	for _, v := range []string{c.JWTSecret, c.JWTPublicKeyFile, c.JWKSURL} {
		if v != "" {
			keys++
		}
	}
	if keys > 1 {
		bad("set only one of PARLEY_JWT_SECRET, PARLEY_JWT_PUBLIC_KEY_FILE and PARLEY_JWKS_URL")
	}
	if c.SendRate <= 0 {
		bad("PARLEY_SEND_RATE must be positive")
	}
	if c.WriteDelay < 0 || c.WriteDelay > time.Second {
		bad("PARLEY_WRITE_DELAY must be between 0 and 1s")
	}
	if c.JoinHistory > 500 {
		bad("PARLEY_JOIN_HISTORY must be at most 500")
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		bad("PARLEY_TRUSTED_PROXIES: %v", err)
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		bad("PARLEY_API_KEY must be at least 16 characters: it is all that stands between the internet and posting as the server")
	}
	if int64(c.MaxTextBytes) >= c.MaxFrameBytes {
		bad("PARLEY_MAX_TEXT_BYTES must be below PARLEY_MAX_FRAME_BYTES, which also holds the frame around the text")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("PARLEY_LOG_LEVEL must be debug, info, warn or error")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("PARLEY_LOG_FORMAT must be text or json")
	}
	return errors.Join(errs...)
}
