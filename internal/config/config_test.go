package config_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/config"
)

func load(env map[string]string) (config.Config, error) {
	return config.Load(func(k string) string { return env[k] })
}

func TestDefaultsAreTheEmbeddedSetup(t *testing.T) {
	cfg, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":8080" || cfg.AMQPURL != "" || cfg.RedisURL != "" || cfg.AMQPExchange != "parley.messages" ||
		cfg.RedisPrefix != "parley:" || cfg.HistoryMaxAge != 168*time.Hour || cfg.PingInterval != 25*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestReadsVariables(t *testing.T) {
	cfg, err := load(map[string]string{
		"PARLEY_ADDR":            "127.0.0.1:9000",
		"PARLEY_AMQP_URL":        "amqp://guest:guest@127.0.0.1:5672/",
		"PARLEY_REDIS_URL":       "redis://127.0.0.1:6379/0",
		"PARLEY_ALLOWED_ORIGINS": "chat.example.com,*.example.org",
		"PARLEY_SEND_RATE":       "2.5",
		"PARLEY_PING_INTERVAL":   "5s",
		"PARLEY_TRUSTED_PROXIES": "127.0.0.0/8, 10.0.0.0/8",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9000" || len(cfg.AllowedOrigins) != 2 || cfg.AllowedOrigins[1] != "*.example.org" ||
		cfg.SendRate != 2.5 || cfg.PingInterval != 5*time.Second {
		t.Fatalf("parsed: %+v", cfg)
	}
	if p, err := cfg.TrustedProxyPrefixes(); err != nil || len(p) != 2 || p[1].String() != "10.0.0.0/8" {
		t.Fatalf("trusted proxies %v, %v", p, err)
	}
}

func TestRejectsBadConfiguration(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PARLEY_AMQP_URL": "amqp://127.0.0.1/"}, "PARLEY_REDIS_URL"},
		{map[string]string{"PARLEY_AMQP_URL": "http://x", "PARLEY_REDIS_URL": "redis://x"}, "PARLEY_AMQP_URL"},
		{map[string]string{"PARLEY_REDIS_URL": "mysql://x"}, "PARLEY_REDIS_URL"},
		{map[string]string{"PARLEY_SEND_RATE": "0"}, "PARLEY_SEND_RATE"},
		{map[string]string{"PARLEY_SEND_RATE": "fast"}, "PARLEY_SEND_RATE"},
		{map[string]string{"PARLEY_MAX_FRAME_BYTES": "-1"}, "PARLEY_MAX_FRAME_BYTES"},
		{map[string]string{"PARLEY_MAX_TEXT_BYTES": "20000"}, "PARLEY_MAX_TEXT_BYTES"},
		{map[string]string{"PARLEY_JOIN_HISTORY": "501"}, "PARLEY_JOIN_HISTORY"},
		{map[string]string{"PARLEY_PING_INTERVAL": "soon"}, "PARLEY_PING_INTERVAL"},
		{map[string]string{"PARLEY_LOG_LEVEL": "loud"}, "PARLEY_LOG_LEVEL"},
		{map[string]string{"PARLEY_LOG_FORMAT": "xml"}, "PARLEY_LOG_FORMAT"},
		{map[string]string{"PARLEY_TRUSTED_PROXIES": "127.0.0.1"}, "PARLEY_TRUSTED_PROXIES"},
		{map[string]string{"PARLEY_API_KEY": "short"}, "PARLEY_API_KEY"},
		{map[string]string{"PARLEY_MAX_CONNS_PER_IP": "0"}, "PARLEY_MAX_CONNS_PER_IP"},
	} {
		_, err := load(tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %s", tc.env, err, tc.want)
		}
	}
}

// TestEveryVariableIsDocumented keeps the README's configuration table
// complete: a variable Config reads but the README does not mention fails.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range config.Keys() {
		if !strings.Contains(string(readme), "| `"+k+"` |") {
			t.Errorf("README.md's configuration table has no row for %s", k)
		}
	}
}

func TestGuestsDefault(t *testing.T) {
	for _, tc := range []struct {
		env           map[string]string
		guests, token bool
	}{
		{map[string]string{}, true, false},
		{map[string]string{"PARLEY_JWT_SECRET": "s"}, false, true},
		{map[string]string{"PARLEY_JWKS_URL": "https://id.example/jwks"}, false, true},
		{map[string]string{"PARLEY_JWT_SECRET": "s", "PARLEY_GUESTS": "true"}, true, true},
		{map[string]string{"PARLEY_GUESTS": "false"}, false, false},
	} {
		cfg, err := load(tc.env)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if cfg.GuestsAllowed() != tc.guests || cfg.TokensConfigured() != tc.token {
			t.Errorf("%v: guests %v, tokens %v; want %v, %v", tc.env, cfg.GuestsAllowed(), cfg.TokensConfigured(), tc.guests, tc.token)
		}
	}
	for _, env := range []map[string]string{
		{"PARLEY_GUESTS": "maybe"},
		{"PARLEY_JWT_SECRET": "s", "PARLEY_JWKS_URL": "https://id.example/jwks"},
		{"PARLEY_JWKS_REFRESH": "0s"},
	} {
		if _, err := load(env); err == nil {
			t.Errorf("%v: accepted", env)
		}
	}
}
