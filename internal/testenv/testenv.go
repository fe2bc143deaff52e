// Package testenv tells integration tests where the real RabbitMQ and Redis
// are, and gives each test names of its own on them.
//
// Tests that use it are built with the "integration" tag; under that tag a
// service that cannot be reached fails the test, it never skips: the tag is
// the promise that the services are up (scripts/test.sh starts them).
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
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
