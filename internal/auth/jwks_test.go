package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/auth"
)

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{
		"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
	}
}

func ecJWK(t testing.TB, kid string, k *ecdsa.PublicKey) map[string]any {
	t.Helper()
	b, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	n := (len(b) - 1) / 2
	crv := map[int]string{32: "P-256", 48: "P-384"}[n]
	return map[string]any{
		"kty": "EC", "kid": kid, "crv": crv,
		"x": base64.RawURLEncoding.EncodeToString(b[1 : 1+n]),
		"y": base64.RawURLEncoding.EncodeToString(b[1+n:]),
	}
}

// jwksServer serves a key set that a test may replace, and counts fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []map[string]any
	status  int
}

func newJWKSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	s := &jwksServer{keys: keys, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		status, body := s.status, map[string]any{"keys": s.keys}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, keys ...map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.keys = status, keys
}

func TestJWKS(t *testing.T) {
	clock := newFakeClock()
	rsa1, rsa2 := newRSAKey(t), newRSAKey(t)
	ec1 := newECKey(t, elliptic.P256())
	p384 := newECKey(t, elliptic.P384())
	junk := []map[string]any{
		{"kty": "oct", "kid": "hmac", "k": base64.RawURLEncoding.EncodeToString([]byte(testSecret))},
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
		{"kty": "RSA", "kid": "bad-n", "n": "!!!", "e": "AQAB"},
		{"kty": "RSA", "kid": "ps", "alg": "PS256", "n": rsaJWK("", &rsa2.PublicKey)["n"], "e": "AQAB"},
		ecJWK(t, "p384", &p384.PublicKey),
		{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
	}
	srv := newJWKSServer(t, append([]map[string]any{rsaJWK("r1", &rsa1.PublicKey), ecJWK(t, "e1", &ec1.PublicKey)}, junk...)...)
	j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL, JWKSRefresh: 30 * time.Second, Now: clock.Now})
	ctx := context.Background()
	now := clock.Now()

	for name, tok := range map[string]string{
		"RS256": sign(t, jwt.SigningMethodRS256, rsa1, "r1", claimsAt(now, "alice")),
		"ES256": sign(t, jwt.SigningMethodES256, ec1, "e1", claimsAt(now, "alice")),
		// With one key per algorithm, a token without kid is unambiguous.
		"RS256 without kid": sign(t, jwt.SigningMethodRS256, rsa1, "", claimsAt(now, "alice")),
	} {
		if id, err := j.Verify(ctx, tok); err != nil || id.User.ID != "u_alice" {
			t.Errorf("%s: %+v, %v", name, id, err)
		}
	}
	if got := srv.fetches.Load(); got != 1 {
		t.Errorf("%d fetches for three tokens; want 1 (cached)", got)
	}

	// Keys the set has but that are not RS256/ES256 signing keys, and keys
	// used with an algorithm other than their own, verify nothing.
	for name, tok := range map[string]string{
		"HS256 with the JWKS's oct key":    sign(t, jwt.SigningMethodHS256, []byte(testSecret), "hmac", claimsAt(now, "alice")),
		"HS256 keyed with the RSA modulus": sign(t, jwt.SigningMethodHS256, rsa1.PublicKey.N.Bytes(), "r1", claimsAt(now, "alice")),
		"ES256 signed, names the RSA kid":  sign(t, jwt.SigningMethodES256, ec1, "r1", claimsAt(now, "alice")),
		"RS256 signed, names the EC kid":   sign(t, jwt.SigningMethodRS256, rsa1, "e1", claimsAt(now, "alice")),
		"RS256 by another key, kid r1":     sign(t, jwt.SigningMethodRS256, rsa2, "r1", claimsAt(now, "alice")),
		"PS256 key":                        sign(t, jwt.SigningMethodPS256, rsa2, "ps", claimsAt(now, "alice")),
		"ES384 key":                        sign(t, jwt.SigningMethodES384, p384, "p384", claimsAt(now, "alice")),
		"alg none":                         noneToken(t, now),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := j.Verify(ctx, tok)
			wantStatus(t, err, http.StatusUnauthorized, tok)
		})
	}

	// Rotation: the provider adds r2. A token naming it makes the gateway
	// fetch again, once the refresh interval since the last fetch passed.
	srv.set(http.StatusOK, rsaJWK("r1", &rsa1.PublicKey), rsaJWK("r2", &rsa2.PublicKey), ecJWK(t, "e1", &ec1.PublicKey))
	clock.Advance(31 * time.Second)
	before := srv.fetches.Load()
	r2 := sign(t, jwt.SigningMethodRS256, rsa2, "r2", claimsAt(clock.Now(), "bob"))
	if id, err := j.Verify(ctx, r2); err != nil || id.User.ID != "u_bob" {
		t.Fatalf("rotated key r2: %+v, %v", id, err)
	}
	if got := srv.fetches.Load() - before; got != 1 {
		t.Errorf("%d fetches for the new kid; want 1", got)
	}
	// Two RS256 keys now: a token without kid is ambiguous.
	_, err := j.Verify(ctx, sign(t, jwt.SigningMethodRS256, rsa1, "", claimsAt(clock.Now(), "alice")))
	wantStatus(t, err, http.StatusUnauthorized, "")

	// Unknown kids: refused, and however many arrive they cost at most one
	// fetch per refresh interval.
	before = srv.fetches.Load()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			tok := sign(t, jwt.SigningMethodRS256, rsa2, "made-up", claimsAt(clock.Now(), "mallory"))
			_, err := j.Verify(ctx, tok)
			var ae *auth.Error
			if !asAuthError(err, &ae) || ae.Status != http.StatusUnauthorized {
				t.Errorf("unknown kid: %v", err)
			}
		})
	}
	wg.Wait()
	if got := srv.fetches.Load() - before; got != 0 {
		t.Errorf("%d fetches for unknown kids within the refresh interval of the last fetch; want 0", got)
	}
	clock.Advance(31 * time.Second)
	for range 20 {
		_, _ = j.Verify(ctx, sign(t, jwt.SigningMethodRS256, rsa2, "made-up-2", claimsAt(clock.Now(), "mallory")))
	}
	if got := srv.fetches.Load() - before; got != 1 {
		t.Errorf("%d fetches for 20 unknown kids after the interval; want 1", got)
	}

	// The provider withdraws r1: once the cached set is older than its max
	// age (1h by default), r1 stops working.
	srv.set(http.StatusOK, rsaJWK("r2", &rsa2.PublicKey))
	r1 := sign(t, jwt.SigningMethodRS256, rsa1, "r1", claimsAt(clock.Now(), "alice"))
	if _, err := j.Verify(ctx, r1); err != nil {
		t.Fatalf("r1 before max age: %v", err)
	}
	clock.Advance(time.Hour)
	r1 = sign(t, jwt.SigningMethodRS256, rsa1, "r1", claimsAt(clock.Now(), "alice"))
	_, err = j.Verify(ctx, r1)
	wantStatus(t, err, http.StatusUnauthorized, r1)
}

func asAuthError(err error, target **auth.Error) bool {
	ae, ok := err.(*auth.Error)
	if ok {
		*target = ae
	}
	return ok
}

// TestJWKSKeepsKeysWhileProviderDown: a provider outage must not log out
// everyone whose key the gateway already has.
func TestJWKSKeepsKeysWhileProviderDown(t *testing.T) {
	clock := newFakeClock()
	k := newRSAKey(t)
	srv := newJWKSServer(t, rsaJWK("r1", &k.PublicKey))
	j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL, Now: clock.Now})
	if _, err := j.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k, "r1", claimsAt(clock.Now(), "alice"))); err != nil {
		t.Fatal(err)
	}
	srv.set(http.StatusInternalServerError)
	clock.Advance(2 * time.Hour) // past max age: a fetch is tried, and fails
	before := srv.fetches.Load()
	if _, err := j.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k, "r1", claimsAt(clock.Now(), "alice"))); err != nil {
		t.Fatalf("known key while the provider fails: %v", err)
	}
	if srv.fetches.Load() == before {
		t.Error("no fetch was tried for a set past its max age")
	}
}

// TestJWKSProviderUnreachable: with no keys and no provider, every token is
// refused (fail closed), quickly, and later handshakes do not each wait for
// the provider again.
func TestJWKSProviderUnreachable(t *testing.T) {
	k := newRSAKey(t)
	tok := sign(t, jwt.SigningMethodRS256, k, "r1", claimsAt(time.Now(), "alice"))

	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String() + "/jwks.json"
		ln.Close()
		j := mustJWT(t, auth.JWTConfig{JWKSURL: url})
		_, err = j.Verify(context.Background(), tok)
		wantStatus(t, err, http.StatusUnauthorized, tok)
	})

	t.Run("hangs", func(t *testing.T) {
		release := make(chan struct{})
		var hits atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) })
		j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL, JWKSTimeout: 300 * time.Millisecond})

		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				_, err := j.Verify(context.Background(), tok)
				var ae *auth.Error
				if !asAuthError(err, &ae) || ae.Status != http.StatusUnauthorized {
					t.Errorf("hanging provider: %v", err)
				}
			})
		}
		wg.Wait()
		// The ten shared one fetch, which timed out (the provider never
		// answers; had they not timed out, Wait would not have returned).
		if got := hits.Load(); got != 1 {
			t.Errorf("%d fetches; want 1", got)
		}
		// The next handshake within the refresh interval does not fetch
		// again: it is refused at once.
		_, err := j.Verify(context.Background(), tok)
		wantStatus(t, err, http.StatusUnauthorized, tok)
		if got := hits.Load(); got != 1 {
			t.Errorf("%d fetches after a failed one within the refresh interval; want 1", got)
		}
	})

	t.Run("request cancelled while waiting", func(t *testing.T) {
		release, started := make(chan struct{}), make(chan struct{})
		var once sync.Once
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			once.Do(func() { close(started) })
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		t.Cleanup(func() { close(release) })
		j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL, JWKSTimeout: 5 * time.Second})
		wg.Go(func() { _, _ = j.Verify(context.Background(), tok) }) // holds the fetch
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := j.Verify(ctx, tok)
		wantStatus(t, err, http.StatusUnauthorized, tok)
		// The fetch it would wait for takes 5s; a handshake cancelled
		// after 100ms must not.
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("a cancelled handshake waited %v for another's fetch", d)
		}
	})

	t.Run("not a JWKS", func(t *testing.T) {
		for _, body := range []string{`<html>`, `{"keys":[]}`, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(body))
			}))
			j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL})
			_, err := j.Verify(context.Background(), tok)
			wantStatus(t, err, http.StatusUnauthorized, tok)
			srv.Close()
		}
	})
}

// TestJWKSFetchOutlivesCancelledHandshake: a client that hangs up while its
// handshake waits for the JWKS must not cancel the fetch, or it would leave
// everyone else without keys until the next refresh interval.
func TestJWKSFetchOutlivesCancelledHandshake(t *testing.T) {
	k := newRSAKey(t)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{rsaJWK("r1", &k.PublicKey)}})
	}))
	t.Cleanup(srv.Close)
	j := mustJWT(t, auth.JWTConfig{JWKSURL: srv.URL})
	tok := sign(t, jwt.SigningMethodRS256, k, "r1", claimsAt(time.Now(), "alice"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = j.Verify(ctx, tok)
	}()
	<-started
	cancel()
	close(release)
	<-done

	if _, err := j.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the first handshake hung up: %v", err)
	}
	if got := fetches.Load(); got != 1 {
		t.Errorf("%d fetches; want 1", got)
	}
}

// TestJWKSRedirectDowngrade: a JWKS behind a redirect is followed only to
// where the configured URL itself could be.
func TestJWKSRedirectDowngrade(t *testing.T) {
	k := newRSAKey(t)
	keys := newJWKSServer(t, rsaJWK("r1", &k.PublicKey))
	tok := sign(t, jwt.SigningMethodRS256, k, "r1", claimsAt(time.Now(), "alice"))
	// 0.0.0.0 is not a loopback address, so plain http to it is refused,
	// yet it reaches this host: a broken check would show as a success,
	// without traffic leaving the machine.
	elsewhere := strings.Replace(keys.URL, "127.0.0.1", "0.0.0.0", 1)
	for target, ok := range map[string]bool{
		keys.URL:  true,  // loopback http: allowed
		elsewhere: false, // plain http to another address: not followed
	} {
		redirect := httptest.NewServer(http.RedirectHandler(target, http.StatusFound))
		j := mustJWT(t, auth.JWTConfig{JWKSURL: redirect.URL})
		_, err := j.Verify(context.Background(), tok)
		if ok && err != nil {
			t.Errorf("redirect to %s: %v", target, err)
		}
		if !ok {
			wantStatus(t, err, http.StatusUnauthorized, tok)
		}
		redirect.Close()
	}
}
