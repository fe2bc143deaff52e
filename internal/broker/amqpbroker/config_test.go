package amqpbroker

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Config{URL: "amqp://guest:guest@localhost:5672/"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Exchange != DefaultExchange || c.Prefetch != DefaultPrefetch ||
		c.QueueMaxLength != DefaultQueueMaxLength || c.BackoffBase != DefaultBackoffBase ||
		c.BackoffCap != DefaultBackoffCap || c.Logger == nil || c.GatewayID == "" {
		t.Errorf("defaults not applied: %+v", c)
	}
	c, err = Config{URL: "amqp://localhost/", BackoffBase: 5 * time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.BackoffCap != 5*time.Second {
		t.Errorf("BackoffCap = %v with only a 5s base set, want 5s", c.BackoffCap)
	}
}

func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no URL", Config{}, "URL is empty"},
		{"bad URL", Config{URL: "http://secret@x/"}, "invalid URL"},
		{"negative prefetch", Config{URL: "amqp://x/", Prefetch: -1}, "Prefetch"},
		{"huge prefetch", Config{URL: "amqp://x/", Prefetch: 70000}, "Prefetch"},
		{"negative length", Config{URL: "amqp://x/", QueueMaxLength: -1}, "QueueMaxLength"},
		{"negative backoff", Config{URL: "amqp://x/", BackoffBase: -1}, "negative"},
		{"cap below base", Config{URL: "amqp://x/", BackoffBase: time.Second, BackoffCap: time.Millisecond}, "BackoffCap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%+v) = %v, want an error mentioning %q", tc.cfg, err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the URL's credentials: %v", err)
			}
		})
	}
}
