package gateway

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIPBelievesOnlyTrustedProxies(t *testing.T) {
	g := &Gateway{opts: Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.7:5000", nil, "203.0.113.7"},
		// An untrusted peer may say anything; it is not believed.
		{"203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		// The proxy appends the address it saw; whatever the client put
		// further left is its own claim.
		{"10.1.2.3:80", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"10.1.2.3:80", []string{"1.1.1.1", "198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"10.1.2.3:80", nil, "10.1.2.3"},
		{"10.1.2.3:80", []string{"not-an-ip"}, "10.1.2.3"},
		{"10.1.2.3:80", []string{"198.51.100.1, garbage"}, "10.1.2.3"},
		{"[::ffff:10.1.2.3]:80", []string{"2001:db8::1"}, "2001:db8::1"},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.remote
		for _, h := range tc.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := g.clientIP(r); got.String() != tc.want {
			t.Errorf("remote %s, X-Forwarded-For %q: got %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

// TestSmallBuffersKeepBytesReadPastTheRequest: a client may send data right
// behind its request (its first frame, as soon as it has the 101). The
// server may have read it already; after the hijack it must come first on
// the connection, as the WebSocket library reads it: from the reader's
// buffer, then from the connection.
func TestSmallBuffersKeepBytesReadPastTheRequest(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := smallBuffers{w}.Hijack()
		if err != nil {
			got <- "hijack: " + err.Error()
			return
		}
		defer conn.Close()
		// What coder/websocket's Accept does with the hijacked reader.
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		brw.Reader.Reset(io.MultiReader(bytes.NewReader(b), conn))
		rest, _ := io.ReadAll(brw.Reader)
		got <- string(rest)
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Request and data in one write: the server reads both at once.
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\nfirst frame"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "first frame" {
		t.Fatalf("after the hijack the connection read %q, want %q", s, "first frame")
	}
	c.Close()
}
