package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/auth"
)

func TestGuest(t *testing.T) {
	a, err := auth.Guest{}.Authenticate(wsRequest(url.Values{"name": {" Ann \u202e"}, "key": {"0123456789abcdef"}}, ""))
	if err != nil {
		t.Fatal(err)
	}
	b, err := auth.Guest{}.Authenticate(wsRequest(url.Values{"name": {"Ann"}, "key": {"0123456789abcdef"}}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Guest || a.User.Name != "Ann" || !strings.HasPrefix(a.User.ID, "g_") || len(a.User.ID) != 18 {
		t.Errorf("guest = %+v", a)
	}
	if a.User.ID != b.User.ID {
		t.Errorf("same key, ids %q and %q", a.User.ID, b.User.ID)
	}
	if !a.Expires.IsZero() || a.Rooms != nil || !a.MayJoin("general") {
		t.Errorf("a guest expires (%v) or is kept out of rooms (%q)", a.Expires, a.Rooms)
	}
	_, err = auth.Guest{}.Authenticate(wsRequest(nil, ""))
	wantStatus(t, err, http.StatusBadRequest, "")
	_, err = auth.Guest{}.Authenticate(wsRequest(url.Values{"name": {"Ann"}, "key": {"short"}}, ""))
	wantStatus(t, err, http.StatusBadRequest, "")
}

// TestAuthenticatorModes checks every combination of tokens and guests that
// the configuration can ask for.
func TestAuthenticatorModes(t *testing.T) {
	good, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "alice", Name: "Alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bad := good[:len(good)-2] + "xx"
	guestReq := func() *http.Request { return wsRequest(url.Values{"name": {"Gus"}}, "") }
	tokenReq := func(tok string) *http.Request { return queryToken(tok) }
	badReq := func() *http.Request { return tokenReq(bad) }
	bothReq := func() *http.Request { return wsRequest(url.Values{"token": {good}, "name": {"Gus"}}, "") }

	type outcome struct {
		status int    // 0: accepted
		id     string // prefix of the user id when accepted
	}
	for _, tc := range []struct {
		name string
		cfg  auth.Config
		want map[string]outcome
	}{
		{"tokens only", auth.Config{JWT: auth.JWTConfig{Secret: testSecret}}, map[string]outcome{
			"guest": {status: 401}, "token": {id: "u_"}, "bad token": {status: 401}, "token and name": {id: "u_"},
		}},
		{"tokens and guests", auth.Config{JWT: auth.JWTConfig{Secret: testSecret}, Guests: true}, map[string]outcome{
			// A bad token never falls back to a guest.
			"guest": {id: "g_"}, "token": {id: "u_"}, "bad token": {status: 401}, "token and name": {id: "u_"},
		}},
		{"guests only", auth.Config{Guests: true}, map[string]outcome{
			// Without a key a token proves nothing: the request is a guest's
			// and must bring a name.
			"guest": {id: "g_"}, "token": {status: 400}, "bad token": {status: 400}, "token and name": {id: "g_"},
		}},
		{"closed", auth.Config{}, map[string]outcome{
			"guest": {status: 401}, "token": {status: 401}, "bad token": {status: 401}, "token and name": {status: 401},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := auth.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if a.String() == "" {
				t.Error("no description")
			}
			reqs := map[string]func() *http.Request{
				"guest": guestReq, "token": func() *http.Request { return tokenReq(good) }, "bad token": badReq, "token and name": bothReq,
			}
			for what, want := range tc.want {
				id, err := a.Authenticate(reqs[what]())
				if want.status != 0 {
					wantStatus(t, err, want.status, good)
					continue
				}
				if err != nil || !strings.HasPrefix(id.User.ID, want.id) {
					t.Errorf("%s: %+v, %v; want an id starting %q", what, id, err, want.id)
				}
			}
		})
	}

	if _, err := auth.New(auth.Config{JWT: auth.JWTConfig{Secret: "short"}}); err == nil {
		t.Error("New accepted a short secret")
	}

	// Refresh goes through the token verifier, and nowhere without one.
	a, err := auth.New(auth.Config{JWT: auth.JWTConfig{Secret: testSecret}, Guests: true})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := a.Authenticate(tokenReq(good))
	if err != nil {
		t.Fatal(err)
	}
	next, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "alice", Rooms: []string{"general"}}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Refresh(context.Background(), cur, next)
	if err != nil || id.User.ID != cur.User.ID || id.MayJoin("random") || !id.Expires.After(cur.Expires) {
		t.Errorf("Refresh = %+v, %v", id, err)
	}
	guestsOnly, err := auth.New(auth.Config{Guests: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = guestsOnly.Refresh(context.Background(), cur, next)
	wantStatus(t, err, http.StatusBadRequest, next)
}

func TestMint(t *testing.T) {
	j := mustJWT(t, auth.JWTConfig{Secret: testSecret, Audience: "parley", Issuer: "backend"})
	start := time.Now().Truncate(time.Second)
	tok, err := auth.Mint([]byte(testSecret), auth.Claims{
		Subject: "alice", Name: "Alice", Rooms: []string{"team-*", "general"}, Audience: "parley", Issuer: "backend",
	}, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, err := j.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify(Mint(...)): %v", err)
	}
	if id.User.ID != "u_alice" || id.User.Name != "Alice" || !slices.Equal(id.Rooms, []string{"team-*", "general"}) {
		t.Errorf("identity = %+v", id)
	}
	if exp := id.Expires.Sub(start); exp < 90*time.Minute || exp > 90*time.Minute+2*time.Second {
		t.Errorf("expires %v after minting; want 90m", exp)
	}

	// The payload is the documented one.
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sub", "name", "rooms", "aud", "iss", "exp", "iat"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %q missing from %s", k, payload)
		}
	}
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if !strings.Contains(string(header), `"alg":"HS256"`) {
		t.Errorf("header %s", header)
	}

	// nil rooms: the claim is absent (every room); empty: present, no room.
	all, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "bob", Audience: "parley", Issuer: "backend"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := j.Verify(context.Background(), all); err != nil || id.Rooms != nil || id.User.Name != "bob" {
		t.Errorf("no rooms claim: %+v, %v", id, err)
	}
	none, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "bob", Rooms: []string{}, Audience: "parley", Issuer: "backend"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := j.Verify(context.Background(), none); err != nil || id.MayJoin("general") {
		t.Errorf("empty rooms claim: %+v, %v", id, err)
	}

	// A token for another audience is refused by this gateway.
	other, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "bob", Audience: "other", Issuer: "backend"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = j.Verify(context.Background(), other)
	wantStatus(t, err, http.StatusUnauthorized, other)

	for name, tc := range map[string]struct {
		secret string
		c      auth.Claims
		ttl    time.Duration
	}{
		"short secret":   {"secret", auth.Claims{Subject: "alice"}, time.Hour},
		"no subject":     {testSecret, auth.Claims{}, time.Hour},
		"bad subject":    {testSecret, auth.Claims{Subject: "alice smith"}, time.Hour},
		"zero ttl":       {testSecret, auth.Claims{Subject: "alice"}, 0},
		"negative ttl":   {testSecret, auth.Claims{Subject: "alice"}, -time.Hour},
		"bad pattern":    {testSecret, auth.Claims{Subject: "alice", Rooms: []string{"team-["}}, time.Hour},
		"token too long": {testSecret, auth.Claims{Subject: "alice", Rooms: slices.Repeat([]string{strings.Repeat("r", 100)}, 100)}, time.Hour},
	} {
		if tok, err := auth.Mint([]byte(tc.secret), tc.c, tc.ttl); err == nil {
			t.Errorf("%s: minted %s", name, tok)
		}
	}
}

// TestMintedTokenFailsElsewhere: a token minted with one secret is refused
// by a gateway with another, and an HS256 token never passes an
// RSA-configured gateway.
func TestMintedTokenFailsElsewhere(t *testing.T) {
	tok, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := mustJWT(t, auth.JWTConfig{Secret: testSecret + "-other"})
	_, err = other.Verify(context.Background(), tok)
	wantStatus(t, err, http.StatusUnauthorized, tok)

	k := newRSAKey(t)
	file, pemBytes := writePublicKey(t, &k.PublicKey)
	rs := mustJWT(t, auth.JWTConfig{PublicKeyFile: file})
	confused, err := auth.Mint(pemBytes, auth.Claims{Subject: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rs.Verify(context.Background(), confused)
	wantStatus(t, err, http.StatusUnauthorized, confused)
	_, err = rs.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k, "", claimsAt(time.Now(), "alice")))
	if err != nil {
		t.Errorf("the RSA gateway refuses its own kind of token: %v", err)
	}
}
