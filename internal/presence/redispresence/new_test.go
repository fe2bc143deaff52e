package redispresence

import (
	"net"
	"strings"
	"testing"
	"time"
)

// These tests need no Redis: they check that New refuses what it cannot use,
// and quickly.

// TestNewNeedsRedis: without a client or a URL, or with a URL that is not a
// Redis URL, New fails rather than guessing a server.
func TestNewNeedsRedis(t *testing.T) {
	for _, cfg := range []Config{{}, {URL: "http://127.0.0.1:6379"}, {URL: "redis://127.0.0.1:6379/notadb"}} {
		s, err := New(t.Context(), cfg)
		if err == nil {
			_ = s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

// TestNewBadURLHidesPassword: the error for a malformed URL does not repeat
// the password, since it ends up in logs.
func TestNewBadURLHidesPassword(t *testing.T) {
	_, err := New(t.Context(), Config{URL: "redis://user:s3cret@127.0.0.1:notaport/0"})
	if err == nil {
		t.Fatal("New succeeded with a bad port")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q shows the password", err)
	}
}

// TestNewUnreachable: with nothing listening, New fails within the dial
// timeout and says what failed.
func TestNewUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	s, err := New(t.Context(), Config{URL: "redis://" + addr + "/0"})
	if err == nil {
		_ = s.Close()
		t.Fatal("New succeeded against a closed port")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("New took %v to fail, want under 2s", d)
	}
	if !strings.Contains(err.Error(), "ping") {
		t.Errorf("error %q does not say what failed", err)
	}
}
