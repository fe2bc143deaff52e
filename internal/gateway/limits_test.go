package gateway

import (
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
