package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxJWKSBytes bounds the JWKS document read: a provider publishes a few
// keys, a few kilobytes.
const maxJWKSBytes = 1 << 20

// jwks is a key set an identity provider publishes at a URL (RFC 7517),
// fetched when first needed, cached, and fetched again when a token names a
// key it does not have (the provider rotated its keys) or when it is older
// than maxAge, but never more often than every refresh: forged tokens with
// made-up kids cannot turn the gateway into a load on the provider.
type jwks struct {
	url     string
	client  *http.Client
	timeout time.Duration
	refresh time.Duration
	maxAge  time.Duration
	now     func() time.Time
	// sem lets one fetch run at a time; callers wait for it rather than
	// start another, and stop waiting when their request ends.
	sem chan struct{}

	mu      sync.Mutex
	keys    []jwk     // the last set fetched with a usable key
	fetched time.Time // when keys were fetched
	tried   time.Time // when the last fetch started
	lastErr error     // what the last fetch failed with, nil if it worked
}

// jwk is one usable verification key of a set.
type jwk struct {
	kid string
	alg string
	key any
}

func newJWKS(cfg JWTConfig, now func() time.Time) (*jwks, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil {
		return nil, fmt.Errorf("JWKS URL: %w", err)
	}
	if err := checkJWKSURL(u); err != nil {
		return nil, err
	}
	orDefault := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	s := &jwks{
		url:     cfg.JWKSURL,
		timeout: orDefault(cfg.JWKSTimeout, 5*time.Second),
		refresh: orDefault(cfg.JWKSRefresh, 30*time.Second),
		maxAge:  orDefault(cfg.JWKSMaxAge, time.Hour),
		now:     now,
		sem:     make(chan struct{}, 1),
	}
	s.client = &http.Client{
		Timeout: s.timeout,
		// A redirect must not lead somewhere the URL itself could not be.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return checkJWKSURL(req.URL)
		},
	}
	return s, nil
}

// checkJWKSURL allows https, and http only to this host (tests, a sidecar):
// over any network a plain-HTTP JWKS would let whoever sits in between mint
// tokens.
func checkJWKSURL(u *url.URL) error {
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	default:
		return fmt.Errorf("JWKS URL %q must be https (http only on a loopback address)", u.Redacted())
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *jwks) methods() []string { return []string{algRS256, algES256} }

func (s *jwks) describe() string { return "RS256/ES256 keys from " + s.url }

func (s *jwks) key(ctx context.Context, alg, kid string) (any, error) {
	k, fresh := s.lookup(alg, kid)
	if k != nil && fresh {
		return k, nil
	}
	err := s.update(ctx)
	if k2, _ := s.lookup(alg, kid); k2 != nil {
		// A key fetched just now, or a stale one kept because the provider
		// did not answer: better than refusing every user while it is down.
		return k2, nil
	}
	if err != nil {
		return nil, fmt.Errorf("no %s key %q: %w", alg, kid, err)
	}
	return nil, fmt.Errorf("no %s key %q in the JWKS", alg, kid)
}

// lookup finds the key for alg and kid in the cached set, and says whether
// the set is young enough to be trusted without a fetch. A token without a
// kid is accepted only when the set leaves no choice.
func (s *jwks) lookup(alg, kid string) (key any, fresh bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh = !s.fetched.IsZero() && s.now().Sub(s.fetched) < s.maxAge
	var found any
	n := 0
	for _, k := range s.keys {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			found = k.key
			n++
		}
	}
	if n != 1 {
		return nil, fresh
	}
	return found, fresh
}

// update fetches the set again unless a fetch started less than refresh
// ago. A failed fetch keeps the keys that were there.
func (s *jwks) update(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the JWKS: %w", ctx.Err())
	}
	defer func() { <-s.sem }()

	s.mu.Lock()
	if !s.tried.IsZero() && s.now().Sub(s.tried) < s.refresh {
		err := s.lastErr
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("JWKS fetched less than %s ago, and that failed: %w", s.refresh, err)
		}
		return fmt.Errorf("JWKS fetched less than %s ago; not fetching again yet", s.refresh)
	}
	s.tried = s.now()
	s.mu.Unlock()

	// The fetch outlives the request that triggered it (bounded by
	// timeout): a client that hangs up must not leave the cache unrefreshed
	// for the next refresh interval.
	keys, err := s.fetch(context.WithoutCancel(ctx))

	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
	if err != nil {
		return err
	}
	s.keys, s.fetched = keys, s.now()
	return nil
}

func (s *jwks) fetch(ctx context.Context) ([]jwk, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch JWKS: larger than %d bytes", maxJWKSBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	return keys, nil
}

// parseJWKS keeps the keys of a set that can verify RS256 or ES256
// signatures and skips the rest (encryption keys, other algorithms and
// curves, malformed entries), since providers publish keys for many uses.
func parseJWKS(data []byte) ([]jwk, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	var keys []jwk
	for _, raw := range set.Keys {
		if k, err := parseJWK(raw); err == nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("none of the %d keys is an RS256 or ES256 signing key", len(set.Keys))
	}
	return keys, nil
}

func parseJWK(raw []byte) (jwk, error) {
	var j struct {
		Kty    string   `json:"kty"`
		Kid    string   `json:"kid"`
		Alg    string   `json:"alg"`
		Use    string   `json:"use"`
		KeyOps []string `json:"key_ops"`
		Crv    string   `json:"crv"`
		N      string   `json:"n"`
		E      string   `json:"e"`
		X      string   `json:"x"`
		Y      string   `json:"y"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return jwk{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return jwk{}, fmt.Errorf("key %q is for %q", j.Kid, j.Use)
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return jwk{}, fmt.Errorf("key %q is not for verifying", j.Kid)
	}
	var pub any
	switch {
	case j.Kty == "RSA" && (j.Alg == "" || j.Alg == algRS256):
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err := errors.Join(err1, err2); err != nil {
			return jwk{}, err
		}
		if len(e) == 0 || len(e) > 4 {
			return jwk{}, errors.New("bad RSA exponent")
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 {
			return jwk{}, errors.New("bad RSA exponent")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case j.Kty == "EC" && j.Crv == "P-256" && (j.Alg == "" || j.Alg == algES256):
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		if err := errors.Join(err1, err2); err != nil {
			return jwk{}, err
		}
		if len(x) != 32 || len(y) != 32 {
			return jwk{}, errors.New("bad P-256 coordinates")
		}
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
		if err != nil {
			return jwk{}, err
		}
		pub = k
	default:
		return jwk{}, fmt.Errorf("key %q: kty %q alg %q is not RS256 or ES256", j.Kid, j.Kty, j.Alg)
	}
	alg, err := algFor(pub)
	if err != nil {
		return jwk{}, err
	}
	return jwk{kid: j.Kid, alg: alg, key: pub}, nil
}

// b64 decodes a JWK member: base64url without padding (RFC 7517), padding
// tolerated.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
