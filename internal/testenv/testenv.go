// Package testenv tells integration tests where the real RabbitMQ and Redis
// are, and gives each test names of its own on them.
//
// Tests that use it are built with the "integration" tag; under that tag a
// service that cannot be reached fails the test, it never skips: the tag is
// the promise that the services are up (scripts/test.sh starts them).
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// AMQPURL returns the RabbitMQ URL for tests: $PARLEY_TEST_AMQP_URL, or the
// local server.
func AMQPURL() string {
	if u := os.Getenv("PARLEY_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// RedisURL returns the Redis URL for tests: $PARLEY_TEST_REDIS_URL, or the
// local server.
func RedisURL() string {
	if u := os.Getenv("PARLEY_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Unique returns a name no other test uses: the test's name made safe for
// keys and exchange names, and a random suffix. Use it as the Redis key prefix
// or exchange name so that tests running in parallel never hear each other.
func Unique(tb testing.TB) string {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, tb.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return "test." + name + "." + hex.EncodeToString(b[:])
}

// Isolated returns a Redis key prefix and an AMQP exchange name that no
// other test uses, and removes what the test left under them (keys, the
// durable exchange) when it ends, so that repeated runs do not pile up state
// on the shared servers.
func Isolated(tb testing.TB) (prefix, exchange string) {
	tb.Helper()
	name := Unique(tb)
	prefix, exchange = name+":", name
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := DeleteKeys(ctx, prefix); err != nil {
			tb.Errorf("clean up redis keys %s*: %v", prefix, err)
		}
		if err := DeleteExchange(exchange); err != nil {
			tb.Errorf("clean up exchange %s: %v", exchange, err)
		}
	})
	return prefix, exchange
}

// DeleteKeys deletes every Redis key that starts with prefix.
func DeleteKeys(ctx context.Context, prefix string) error {
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rdb.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("unlink: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

// DeleteExchange deletes an AMQP exchange (and with it its bindings).
func DeleteExchange(name string) error {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return ch.ExchangeDelete(name, false, false)
}
