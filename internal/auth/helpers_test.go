package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/auth"
)

// testSecret is long enough for auth.MinSecretBytes.
const testSecret = "0123456789abcdef0123456789abcdef-test"

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_900_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// claimsAt returns valid claims for sub relative to now: issued now, valid
// for an hour.
func claimsAt(now time.Time, sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
}

// sign signs claims with method and key, with an optional kid.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func newRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePEM writes a PEM block of the given type to a temporary file and
// returns its name and the file's bytes.
func writePEM(t testing.TB, typ string, der []byte) (string, []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	name := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return name, data
}

func writePublicKey(t testing.TB, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "PUBLIC KEY", der)
}

// wsRequest is a handshake request carrying token in the query (when q is
// set) and/or an Authorization header (when h is set).
func wsRequest(query url.Values, header string) *http.Request {
	target := "/ws"
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	return r
}

func queryToken(tok string) *http.Request {
	return wsRequest(url.Values{"token": {tok}}, "")
}

// wantStatus fails unless err is an *auth.Error with the given status, and
// returns it. A refusal must never echo the token it refuses.
func wantStatus(t testing.TB, err error, status int, token string) *auth.Error {
	t.Helper()
	var ae *auth.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T); want an *auth.Error with status %d", err, err, status)
	}
	if ae.Status != status {
		t.Fatalf("status = %d (%q, cause %v); want %d", ae.Status, ae.Message, ae.Err, status)
	}
	if ae.Message == "" {
		t.Error("refusal without a message")
	}
	if len(token) > 8 && strings.Contains(ae.Message, token) {
		t.Errorf("message %q echoes the token", ae.Message)
	}
	return ae
}

func mustJWT(t testing.TB, cfg auth.JWTConfig) *auth.JWT {
	t.Helper()
	j, err := auth.NewJWT(cfg)
	if err != nil {
		t.Fatalf("NewJWT: %v", err)
	}
	return j
}

func mustPKCS8(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writeCert writes a self-signed certificate for key and returns the file.
func writeCert(t testing.TB, key *rsa.PrivateKey) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "parley test issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := writePEM(t, "CERTIFICATE", der)
	return name
}
