package redisstore

import (
	"net"
	"strings"
	"testing"
	"time"
)

// These tests need no Redis: they check that New refuses what it cannot use,
// and quickly.

// TestNewBadURL: a URL that is not a Redis URL is an error, not a panic or a
// default server.
func TestNewBadURL(t *testing.T) {
	for _, u := range []string{"", "http://127.0.0.1:6379", "redis://127.0.0.1:6379/notadb"} {
		s, err := New(t.Context(), Config{URL: u})
		if err == nil {
			_ = s.Close()
			t.Errorf("New(%q) succeeded, want an error", u)
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

// TestNewUnreachable: with nothing listening on the port, New fails within
// the dial timeout and says it could not reach Redis.
func TestNewUnreachable(t *testing.T) {
	addr := closedAddr(t)
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

// closedAddr returns a loopback address that nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
