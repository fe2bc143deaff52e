package auth_test

import (
	"context"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/auth"
)

func newHS(t *testing.T) (*auth.JWT, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	return mustJWT(t, auth.JWTConfig{Secret: testSecret, Now: clock.Now}), clock
}

func TestJWTValidToken(t *testing.T) {
	j, clock := newHS(t)
	c := claimsAt(clock.Now(), "alice")
	c["name"] = "  Alice\u202e  Liddell "
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
	for _, r := range []*http.Request{queryToken(tok), wsRequest(nil, "Bearer "+tok), wsRequest(nil, "bearer "+tok)} {
		id, err := j.Authenticate(r)
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if id.User.ID != "u_alice" || id.User.Name != "Alice Liddell" || id.Guest {
			t.Errorf("identity = %+v; want u_alice, \"Alice Liddell\", not a guest", id)
		}
		if want := clock.Now().Add(time.Hour); !id.Expires.Equal(want) {
			t.Errorf("Expires = %v; want %v", id.Expires, want)
		}
		if id.Rooms != nil || !id.MayJoin("anything") {
			t.Errorf("Rooms = %#v; want nil (every room)", id.Rooms)
		}
	}
}

func TestJWTRejectsForgeries(t *testing.T) {
	j, clock := newHS(t)
	now := clock.Now()
	good := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(now, "alice"))
	parts := strings.Split(good, ".")
	evilPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + `}`))
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	noneLib, err := jwt.NewWithClaims(jwt.SigningMethodNone, claimsAt(now, "alice")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	rsa := newRSAKey(t)
	hugeDots := strings.Repeat(".", 100_000)
	for _, tc := range []struct {
		name, token string
	}{
		{"other secret", sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), "", claimsAt(now, "alice"))},
		{"payload swapped", parts[0] + "." + evilPayload + "." + parts[2]},
		{"signature dropped", parts[0] + "." + parts[1] + "."},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(now, "bob")), ".")[2]},
		{"alg none by hand", noneHeader + "." + parts[1] + "."},
		{"alg none by the library", noneLib},
		{"HS512 with the right secret", sign(t, jwt.SigningMethodHS512, []byte(testSecret), "", claimsAt(now, "alice"))},
		{"RS256 against an HS key", sign(t, jwt.SigningMethodRS256, rsa, "", claimsAt(now, "alice"))},
		{"crit header", signCrit(t, now)},
		{"many dots", "a.b.c.d.e.f.g.h"},
		{"only dots", strings.Repeat(".", 4000)},
		{"two parts", parts[0] + "." + parts[1]},
		{"garbage", "not a token"},
		{"bad base64", parts[0] + ".!!!." + parts[2]},
		{"huge", strings.Repeat("a", 1<<20)},
		{"huge dots", hugeDots},
		{"just over the limit", good + strings.Repeat("A", auth.MaxTokenBytes-len(good)+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Authenticate(queryToken(tc.token))
			ae := wantStatus(t, err, http.StatusUnauthorized, tc.token)
			want := "invalid token"
			if len(tc.token) > auth.MaxTokenBytes {
				// Refused before anything is decoded.
				want = "token too large"
			}
			// How fast a refusal is belongs in a benchmark; the message
			// shows which check refused it: a token over the limit is
			// refused by its size, before anything is decoded.
			if ae.Message != want {
				t.Errorf("message = %q; want %q", ae.Message, want)
			}
		})
	}
}

// signCrit signs a valid token whose header has a "crit" member, which a
// verifier that does not understand it must refuse (RFC 7515 4.1.11).
func signCrit(t *testing.T, now time.Time) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsAt(now, "alice"))
	tok.Header["crit"] = []string{"exp"}
	s, err := tok.SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTTimeClaims(t *testing.T) {
	j, clock := newHS(t)
	now := clock.Now()
	mk := func(edit func(jwt.MapClaims)) string {
		c := claimsAt(now, "alice")
		edit(c)
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
	}
	for _, tc := range []struct {
		name    string
		token   string
		message string // empty: accepted
	}{
		{"expired", mk(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }), "token expired"},
		{"expired within leeway", mk(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() }), ""},
		{"missing exp", mk(func(c jwt.MapClaims) { delete(c, "exp") }), "invalid token"},
		{"exp not a number", mk(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), "invalid token"},
		{"future nbf", mk(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }), "token not valid yet"},
		{"nbf within leeway", mk(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Second).Unix() }), ""},
		{"past nbf", mk(func(c jwt.MapClaims) { c["nbf"] = now.Add(-time.Minute).Unix() }), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := j.Verify(context.Background(), tc.token)
			if tc.message == "" {
				if err != nil || id.User.ID != "u_alice" {
					t.Fatalf("Verify = %+v, %v; want u_alice", id, err)
				}
				return
			}
			if ae := wantStatus(t, err, http.StatusUnauthorized, tc.token); ae.Message != tc.message {
				t.Errorf("message = %q; want %q", ae.Message, tc.message)
			}
		})
	}

	// A token that was fine expires as the clock moves past exp + leeway.
	tok := mk(func(jwt.MapClaims) {})
	clock.Advance(time.Hour + 31*time.Second)
	if _, err := j.Verify(context.Background(), tok); err == nil {
		t.Fatal("token accepted after exp + leeway")
	}
}

func TestJWTAudienceIssuer(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	checked := mustJWT(t, auth.JWTConfig{Secret: testSecret, Audience: "parley", Issuer: "https://id.example", Now: clock.Now})
	unchecked := mustJWT(t, auth.JWTConfig{Secret: testSecret, Now: clock.Now})
	mk := func(aud any, iss string) string {
		c := claimsAt(now, "alice")
		if aud != nil {
			c["aud"] = aud
		}
		if iss != "" {
			c["iss"] = iss
		}
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
	}
	for _, tc := range []struct {
		name  string
		token string
		ok    bool
	}{
		{"right", mk("parley", "https://id.example"), true},
		{"right among several audiences", mk([]string{"other", "parley"}, "https://id.example"), true},
		{"wrong aud", mk("other", "https://id.example"), false},
		{"missing aud", mk(nil, "https://id.example"), false},
		{"wrong iss", mk("parley", "https://evil.example"), false},
		{"missing iss", mk("parley", ""), false},
		{"wrong aud and expired", func() string {
			c := claimsAt(now, "alice")
			c["aud"], c["iss"], c["exp"] = "other", "https://id.example", now.Add(-time.Hour).Unix()
			return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checked.Verify(context.Background(), tc.token)
			if tc.ok {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
			} else if ae := wantStatus(t, err, http.StatusUnauthorized, tc.token); ae.Message != "invalid token" {
				// Which of aud and iss failed is for the log, not the client.
				t.Errorf("message = %q; want \"invalid token\"", ae.Message)
			}
			if _, err := unchecked.Verify(context.Background(), tc.token); err != nil && tc.name != "wrong aud and expired" {
				t.Errorf("without aud/iss configured: %v", err)
			}
		})
	}
}

func TestJWTSubjectAndName(t *testing.T) {
	j, clock := newHS(t)
	now := clock.Now()
	for _, tc := range []struct {
		name           string
		sub            any // nil: no sub
		nameClaim      any
		wantID, wantNm string // wantID empty: refused
	}{
		{"plain", "alice", "Alice", "u_alice", "Alice"},
		{"guest-looking sub stays a user", "g_0q3v5m2k8d1c7b9a", nil, "u_g_0q3v5m2k8d1c7b9a", "g_0q3v5m2k8d1c7b9a"},
		{"provider style", "auth0|5f7c8ec7c33c6c004bbafe82", "", "u_auth0|5f7c8ec7c33c6c004bbafe82", "auth0|5f7c8ec7c33c6c004bbafe82"},
		{"email", "alice@example.com", "   ", "u_alice@example.com", "alice@example.com"},
		{"name of invisible characters", "bob", "\u200b\u202e", "u_bob", "bob"},
		{"longest sub", strings.Repeat("s", auth.MaxSubjectBytes), nil, "u_" + strings.Repeat("s", auth.MaxSubjectBytes), strings.Repeat("s", 32)},
		{"sub too long", strings.Repeat("s", auth.MaxSubjectBytes+1), nil, "", ""},
		{"missing sub", nil, "Alice", "", ""},
		{"empty sub", "", "Alice", "", ""},
		{"sub with a space", "alice smith", nil, "", ""},
		{"sub with a control character", "alice\n", nil, "", ""},
		{"sub with non-ASCII", "аlice", nil, "", ""}, // Cyrillic а
		{"sub not a string", 42, nil, "", ""},
		{"name not a string", "alice", 42, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := claimsAt(now, "")
			delete(c, "sub")
			if tc.sub != nil {
				c["sub"] = tc.sub
			}
			if tc.nameClaim != nil {
				c["name"] = tc.nameClaim
			}
			tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
			id, err := j.Verify(context.Background(), tok)
			if tc.wantID == "" {
				wantStatus(t, err, http.StatusUnauthorized, tok)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.User.ID != tc.wantID || id.User.Name != tc.wantNm {
				t.Errorf("user = %+v; want {%s %s}", id.User, tc.wantID, tc.wantNm)
			}
			if !strings.HasPrefix(id.User.ID, auth.UserIDPrefix) || len(id.User.ID) > 128 {
				t.Errorf("user id %q: want the %q prefix and at most 128 bytes", id.User.ID, auth.UserIDPrefix)
			}
		})
	}
}

func TestJWTRooms(t *testing.T) {
	j, clock := newHS(t)
	now := clock.Now()
	verify := func(rooms any) (auth.Identity, error) {
		c := claimsAt(now, "alice")
		c["rooms"] = rooms
		return j.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c))
	}

	id, err := verify([]string{"team-*", "general", "dm-alice-?"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(id.Rooms, []string{"team-*", "general", "dm-alice-?"}) {
		t.Errorf("Rooms = %q", id.Rooms)
	}
	for room, want := range map[string]bool{
		"team-a": true, "team-": true, "team-red.ops": true, "general": true, "dm-alice-1": true,
		"team": false, "generals": false, "General": false, "random": false, "dm-alice-12": false, "xteam-a": false,
	} {
		if got := id.MayJoin(room); got != want {
			t.Errorf("MayJoin(%q) = %v; want %v", room, got, want)
		}
	}

	none, err := verify([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if none.Rooms == nil || none.MayJoin("general") {
		t.Errorf("rooms [] gave %#v, MayJoin(general) = %v; want no room", none.Rooms, none.MayJoin("general"))
	}
	all, err := verify(nil) // "rooms": null counts as absent
	if err != nil {
		t.Fatal(err)
	}
	if all.Rooms != nil || !all.MayJoin("general") {
		t.Errorf("rooms null gave %#v; want every room", all.Rooms)
	}

	many := make([]string, auth.MaxRoomPatterns+1)
	for i := range many {
		many[i] = "r"
	}
	for name, rooms := range map[string]any{
		"bad pattern":   []string{"team-["},
		"empty pattern": []string{"general", ""},
		"not a list":    "team-*",
		"not strings":   []any{"general", 7},
		"too many":      many,
		"too long":      []string{strings.Repeat("r", 129)},
	} {
		if _, err := verify(rooms); err == nil {
			t.Errorf("%s: token accepted", name)
		} else {
			wantStatus(t, err, http.StatusUnauthorized, "")
		}
	}

	if (auth.Identity{}).MayJoin("x") != true {
		t.Error("the zero Identity (guest) may not join")
	}
	if (auth.Identity{Rooms: []string{"["}}).MayJoin("[") {
		t.Error("a malformed pattern matched")
	}
}

func TestJWTTokenPlacement(t *testing.T) {
	j, clock := newHS(t)
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(clock.Now(), "alice"))
	other := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(clock.Now(), "bob"))

	if _, err := j.Authenticate(wsRequest(url.Values{"token": {tok}}, "Bearer "+tok)); err != nil {
		t.Errorf("the same token in query and header: %v", err)
	}
	_, err := j.Authenticate(wsRequest(url.Values{"token": {tok}}, "Bearer "+other))
	wantStatus(t, err, http.StatusBadRequest, tok)
	_, err = j.Authenticate(wsRequest(url.Values{"token": {tok, other}}, ""))
	wantStatus(t, err, http.StatusBadRequest, tok)
	r := wsRequest(nil, "")
	r.Header.Add("Authorization", "Bearer "+tok)
	r.Header.Add("Authorization", "Bearer "+other)
	_, err = j.Authenticate(r)
	wantStatus(t, err, http.StatusBadRequest, tok)

	for name, r := range map[string]*http.Request{
		"no token":                 wsRequest(nil, ""),
		"empty query token":        wsRequest(url.Values{"token": {""}}, ""),
		"empty bearer":             wsRequest(nil, "Bearer "),
		"bare bearer":              wsRequest(nil, "Bearer"),
		"basic auth only":          wsRequest(nil, "Basic YWxpY2U6c2VjcmV0"),
		"name but no token":        wsRequest(url.Values{"name": {"alice"}}, ""),
		"access_token is not ours": wsRequest(url.Values{"access_token": {tok}}, ""),
	} {
		_, err := j.Authenticate(r)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		wantStatus(t, err, http.StatusUnauthorized, "")
	}
	// A proxy's Basic credentials next to a query token are not a second token.
	if _, err := j.Authenticate(wsRequest(url.Values{"token": {tok}}, "Basic YWxpY2U6c2VjcmV0")); err != nil {
		t.Errorf("query token with Basic auth header: %v", err)
	}
}

func TestJWTRefresh(t *testing.T) {
	j, clock := newHS(t)
	now := clock.Now()
	first, err := j.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(now, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(50 * time.Minute)
	c := claimsAt(clock.Now(), "alice")
	c["rooms"] = []string{"general"}
	c["name"] = "Alice L."
	next, err := j.Refresh(context.Background(), first, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c))
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if !next.Expires.After(first.Expires) || next.User.ID != first.User.ID || next.User.Name != "Alice L." || next.MayJoin("random") {
		t.Errorf("refreshed = %+v; want a later expiry, the same user, the new name and rooms", next)
	}

	bob := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(clock.Now(), "bob"))
	_, err = j.Refresh(context.Background(), first, bob)
	wantStatus(t, err, http.StatusUnauthorized, bob)

	expired := claimsAt(clock.Now(), "alice")
	expired["exp"] = clock.Now().Add(-time.Hour).Unix()
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", expired)
	_, err = j.Refresh(context.Background(), first, tok)
	if ae := wantStatus(t, err, http.StatusUnauthorized, tok); ae.Message != "token expired" {
		t.Errorf("message = %q", ae.Message)
	}

	forged := sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!"), "", claimsAt(clock.Now(), "alice"))
	_, err = j.Refresh(context.Background(), first, forged)
	wantStatus(t, err, http.StatusUnauthorized, forged)

	guest, err := auth.Guest{}.Authenticate(wsRequest(url.Values{"name": {"alice"}}, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, err = j.Refresh(context.Background(), guest, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsAt(clock.Now(), "alice")))
	wantStatus(t, err, http.StatusBadRequest, "")
}

func TestPublicKeyFile(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	rsaKey := newRSAKey(t)
	rsaFile, rsaPEM := writePublicKey(t, &rsaKey.PublicKey)
	rsaAuth := mustJWT(t, auth.JWTConfig{PublicKeyFile: rsaFile, Now: clock.Now})
	ecKey := newECKey(t, elliptic.P256())
	ecFile, ecPEM := writePublicKey(t, &ecKey.PublicKey)
	ecAuth := mustJWT(t, auth.JWTConfig{PublicKeyFile: ecFile, Now: clock.Now})

	if id, err := rsaAuth.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, rsaKey, "", claimsAt(now, "alice"))); err != nil || id.User.ID != "u_alice" {
		t.Fatalf("RS256: %+v, %v", id, err)
	}
	if id, err := ecAuth.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey, "", claimsAt(now, "alice"))); err != nil || id.User.ID != "u_alice" {
		t.Fatalf("ES256: %+v, %v", id, err)
	}

	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA := newRSAKey(t)
	for _, tc := range []struct {
		name  string
		j     *auth.JWT
		token string
	}{
		// The confusion attack: the public key is public, so an HS256 token
		// "signed" with it would verify if the token chose the algorithm.
		{"HS256 keyed with the RSA public key PEM", rsaAuth, sign(t, jwt.SigningMethodHS256, rsaPEM, "", claimsAt(now, "alice"))},
		{"HS256 keyed with the RSA public key DER", rsaAuth, sign(t, jwt.SigningMethodHS256, der, "", claimsAt(now, "alice"))},
		{"HS256 keyed with the EC public key PEM", ecAuth, sign(t, jwt.SigningMethodHS256, ecPEM, "", claimsAt(now, "alice"))},
		{"RS256 with another key", rsaAuth, sign(t, jwt.SigningMethodRS256, otherRSA, "", claimsAt(now, "alice"))},
		{"PS256 with the right key", rsaAuth, sign(t, jwt.SigningMethodPS256, rsaKey, "", claimsAt(now, "alice"))},
		{"RS512 with the right key", rsaAuth, sign(t, jwt.SigningMethodRS512, rsaKey, "", claimsAt(now, "alice"))},
		{"ES256 against an RSA key", rsaAuth, sign(t, jwt.SigningMethodES256, ecKey, "", claimsAt(now, "alice"))},
		{"RS256 against an EC key", ecAuth, sign(t, jwt.SigningMethodRS256, rsaKey, "", claimsAt(now, "alice"))},
		{"alg none against an RSA key", rsaAuth, noneToken(t, now)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.j.Verify(context.Background(), tc.token)
			wantStatus(t, err, http.StatusUnauthorized, tc.token)
		})
	}

	// Hand-made confusion token, not relying on the library's signer.
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + `}`))
	mac := hmac.New(sha256.New, rsaPEM)
	mac.Write([]byte(header + "." + payload))
	forged := header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	_, err = rsaAuth.Verify(context.Background(), forged)
	wantStatus(t, err, http.StatusUnauthorized, forged)
}

func noneToken(t *testing.T, now time.Time) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claimsAt(now, "alice")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewJWTConfigErrors(t *testing.T) {
	rsaKey := newRSAKey(t)
	pubFile, _ := writePublicKey(t, &rsaKey.PublicKey)
	privFile, _ := writePEM(t, "PRIVATE KEY", mustPKCS8(t, rsaKey))
	p384 := newECKey(t, elliptic.P384())
	p384File, _ := writePublicKey(t, &p384.PublicKey)
	certFile := writeCert(t, rsaKey)
	notPEM, _ := writePEM(t, "PUBLIC KEY", []byte("junk"))

	if _, err := auth.NewJWT(auth.JWTConfig{PublicKeyFile: certFile}); err != nil {
		t.Errorf("certificate file: %v", err)
	}
	for name, cfg := range map[string]auth.JWTConfig{
		"nothing":                 {},
		"short secret":            {Secret: "secret"},
		"secret and key file":     {Secret: testSecret, PublicKeyFile: pubFile},
		"secret and JWKS":         {Secret: testSecret, JWKSURL: "https://id.example/jwks.json"},
		"private key file":        {PublicKeyFile: privFile},
		"P-384 key":               {PublicKeyFile: p384File},
		"missing file":            {PublicKeyFile: pubFile + ".missing"},
		"junk in PEM":             {PublicKeyFile: notPEM},
		"JWKS over plain http":    {JWKSURL: "http://id.example/jwks.json"},
		"JWKS URL without scheme": {JWKSURL: "id.example/jwks.json"},
		"negative leeway":         {Secret: testSecret, Leeway: -time.Second},
	} {
		if _, err := auth.NewJWT(cfg); err == nil {
			t.Errorf("%s: NewJWT accepted %+v", name, cfg)
		}
	}
	for _, u := range []string{"http://127.0.0.1:1/jwks", "http://localhost/jwks", "http://[::1]:8/jwks", "https://id.example/.well-known/jwks.json"} {
		if _, err := auth.NewJWT(auth.JWTConfig{JWKSURL: u}); err != nil {
			t.Errorf("JWKS URL %s: %v", u, err)
		}
	}
}
