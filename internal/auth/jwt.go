package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/internal/protocol"
)

// Limits on what a token may be and say. They keep one hostile handshake
// cheap: the size is checked before anything is decoded.
const (
	// MaxTokenBytes is the longest token accepted. Real ones are a few
	// hundred bytes; a rooms list of a few dozen patterns still fits.
	MaxTokenBytes = 8 << 10
	// MaxSubjectBytes is the longest "sub": the protocol allows 128 bytes
	// of user id, and "u_" takes two.
	MaxSubjectBytes = 126
	// MaxRoomPatterns is the most entries a "rooms" claim may have, and
	// maxRoomPatternBytes the longest entry.
	MaxRoomPatterns     = 256
	maxRoomPatternBytes = 128
	// MinSecretBytes is the shortest HS256 secret accepted: RFC 7518
	// section 3.2 requires a key at least as long as the hash, and a short
	// secret can be guessed offline from any one token.
	MinSecretBytes = 32
)

// UserIDPrefix starts the user id of every token holder ("u_alice" for
// "sub":"alice"). Guests are "g_...", so the two can never collide, and a
// client can tell a vouched-for user from a self-named one by the id alone.
const UserIDPrefix = "u_"

// JWTConfig configures token verification. Exactly one key source may be
// set: Secret (HS256), PublicKeyFile (RS256 or ES256, by the key's type) or
// JWKSURL (RS256 and ES256 keys picked by "kid"). The key decides the
// algorithm, so a token can never choose how it is checked: an HS256 token
// is never checked against a public key (the classic confusion attack), and
// "none" is never accepted.
type JWTConfig struct {
	// Secret is the HS256 secret shared with the backend that signs
	// tokens, used as its raw bytes; at least MinSecretBytes long.
	Secret string
	// PublicKeyFile is a PEM file holding an RSA (2048 bits or more) or
	// P-256 public key, or a certificate for one.
	PublicKeyFile string
	// JWKSURL is where the identity provider publishes its keys (https; http
	// only on a loopback address).
	JWKSURL string

	// Audience, when set, must be among the token's "aud".
	Audience string
	// Issuer, when set, must be the token's "iss".
	Issuer string
	// Leeway is the clock skew allowed on exp and nbf. Zero means 30s.
	Leeway time.Duration

	// JWKSRefresh is the least time between two fetches of the JWKS: a
	// token with an unknown "kid" triggers a fetch, so this bounds what
	// forged kids can make the gateway do. Zero means 30s.
	JWKSRefresh time.Duration
	// JWKSMaxAge is how long fetched keys are used before they are fetched
	// again, so that a key the provider withdrew stops working. Until a
	// fetch succeeds the old keys stay in use. Zero means 1h.
	JWKSMaxAge time.Duration
	// JWKSTimeout bounds one fetch of the JWKS. Zero means 5s.
	JWKSTimeout time.Duration

	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Enabled reports whether c names a key, that is whether tokens are
// accepted at all.
func (c JWTConfig) Enabled() bool {
	return c.Secret != "" || c.PublicKeyFile != "" || c.JWKSURL != ""
}

// JWT verifies the tokens a deployment's backend (or identity provider)
// issues. It is safe for concurrent use.
type JWT struct {
	keys   keySource
	parser *jwt.Parser
	now    func() time.Time
}

// NewJWT checks cfg and loads its key: a bad key file or a short secret
// stops the gateway at startup rather than refusing every user later. A
// JWKS is fetched on first use, so a provider that is briefly down does not
// stop the gateway from starting; until it answers, tokens are refused.
func NewJWT(cfg JWTConfig) (*JWT, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	leeway := cfg.Leeway
	switch {
	case leeway < 0:
		return nil, errors.New("jwt: leeway must not be negative")
	case leeway == 0:
		leeway = 30 * time.Second
	}
	n := 0
	for _, s := range []string{cfg.Secret, cfg.PublicKeyFile, cfg.JWKSURL} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("jwt: set exactly one of the secret, the public key file and the JWKS URL")
	}
	var (
		keys keySource
		err  error
	)
	switch {
	case cfg.Secret != "":
		keys, err = hmacKey([]byte(cfg.Secret))
	case cfg.PublicKeyFile != "":
		keys, err = pemKeyFile(cfg.PublicKeyFile)
	default:
		keys, err = newJWKS(cfg, now)
	}
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(keys.methods()),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	return &JWT{keys: keys, parser: jwt.NewParser(opts...), now: now}, nil
}

// Authenticate implements the gateway's authenticator for a deployment that
// takes tokens only.
func (j *JWT) Authenticate(r *http.Request) (Identity, error) {
	tok, has, err := requestToken(r)
	if err != nil {
		return Identity{}, err
	}
	if !has {
		return Identity{}, unauthorized("authentication required: pass a token as ?token= or in an Authorization: Bearer header", nil)
	}
	return j.Verify(r.Context(), tok)
}

// Refresh verifies token for a session that speaks for cur, which it must
// name too: a session never changes user.
func (j *JWT) Refresh(ctx context.Context, cur Identity, token string) (Identity, error) {
	if cur.Guest {
		return Identity{}, badRequest("a guest session has no token to refresh", nil)
	}
	id, err := j.Verify(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	if id.User.ID != cur.User.ID {
		return Identity{}, unauthorized("the token is for another user", fmt.Errorf("refresh of %q with a token for %q", cur.User.ID, id.User.ID))
	}
	return id, nil
}

// Verify checks token and returns who it speaks for. ctx bounds a JWKS
// fetch, if the token's key has to be fetched.
func (j *JWT) Verify(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, unauthorized("invalid token", errors.New("empty token"))
	}
	if len(token) > MaxTokenBytes {
		return Identity{}, unauthorized("token too large", fmt.Errorf("token of %d bytes; the limit is %d", len(token), MaxTokenBytes))
	}
	var c tokenClaims
	_, err := j.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 4.1.11: extensions we do not understand must fail.
			return nil, errors.New("crit header not supported")
		}
		kid, _ := t.Header["kid"].(string)
		return j.keys.key(ctx, t.Method.Alg(), kid)
	})
	if err != nil {
		return Identity{}, tokenError(err)
	}
	id, err := c.identity()
	if err != nil {
		return Identity{}, unauthorized("invalid token", err)
	}
	return id, nil
}

// tokenError turns a parse failure into what the client is told. Only expiry
// and not-yet-valid are named, and only when nothing else is wrong: they are
// what a legitimate client can act on (fetch a new token, fix its clock),
// and they are checked after the signature, so a forger learns nothing.
func tokenError(err error) *Error {
	other := errors.Is(err, jwt.ErrTokenInvalidAudience) || errors.Is(err, jwt.ErrTokenInvalidIssuer) ||
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing)
	switch {
	case !other && errors.Is(err, jwt.ErrTokenExpired):
		return unauthorized("token expired", err)
	case !other && errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthorized("token not valid yet", err)
	default:
		return unauthorized("invalid token", err)
	}
}

// requestToken finds the handshake's token: ?token= (browsers cannot set
// headers on a WebSocket) or Authorization: Bearer. Two different tokens are
// a malformed request rather than a choice the gateway makes.
func requestToken(r *http.Request) (token string, ok bool, err error) {
	q := r.URL.Query()
	var found []string
	found = append(found, q["token"]...)
	for _, v := range r.Header.Values("Authorization") {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "Bearer") {
			found = append(found, strings.TrimSpace(rest))
		}
		// Other schemes (Basic from a proxy in front) are not ours.
	}
	if len(found) == 0 {
		return "", false, nil
	}
	for _, t := range found[1:] {
		if t != found[0] {
			return "", false, badRequest("two different tokens: send one, as ?token= or in an Authorization: Bearer header", nil)
		}
	}
	return found[0], true, nil
}

// tokenClaims is the token's payload as it travels. Rooms is a pointer so
// that an absent claim (every room) differs from an empty list (no room).
type tokenClaims struct {
	jwt.RegisteredClaims
	Name  string    `json:"name,omitempty"`
	Rooms *[]string `json:"rooms,omitempty"`
}

// identity checks the claims the JWT library does not know about and builds
// the identity they describe.
func (c *tokenClaims) identity() (Identity, error) {
	if err := checkSubject(c.Subject); err != nil {
		return Identity{}, err
	}
	var rooms []string
	if c.Rooms != nil {
		rooms = append([]string{}, *c.Rooms...)
		if err := checkRooms(rooms); err != nil {
			return Identity{}, err
		}
	}
	name, ok := protocol.CleanName(c.Name)
	if !ok {
		name, _ = protocol.CleanName(c.Subject)
	}
	id := Identity{
		User:  protocol.User{ID: UserIDPrefix + c.Subject, Name: name},
		Rooms: rooms,
	}
	if c.ExpiresAt != nil { // always, with WithExpirationRequired
		id.Expires = c.ExpiresAt.Time
	}
	return id, nil
}

// checkSubject holds "sub" to what every identity provider uses (ids,
// emails, "auth0|..." and the like) while keeping spaces, control
// characters and non-ASCII look-alikes out of user ids.
func checkSubject(sub string) error {
	if sub == "" {
		return errors.New("sub is missing")
	}
	if len(sub) > MaxSubjectBytes {
		return fmt.Errorf("sub is %d bytes; the limit is %d", len(sub), MaxSubjectBytes)
	}
	for i := 0; i < len(sub); i++ {
		if c := sub[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("sub has a character other than visible ASCII at byte %d", i)
		}
	}
	return nil
}

// checkRooms rejects a rooms claim the gateway could not apply as the
// backend meant it: a malformed pattern would match nothing, silently.
func checkRooms(rooms []string) error {
	if len(rooms) > MaxRoomPatterns {
		return fmt.Errorf("rooms has %d patterns; the limit is %d", len(rooms), MaxRoomPatterns)
	}
	for _, p := range rooms {
		if p == "" || len(p) > maxRoomPatternBytes {
			return fmt.Errorf("rooms pattern %q: must be 1-%d bytes", truncate(p), maxRoomPatternBytes)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("rooms pattern %q: %w", truncate(p), err)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
