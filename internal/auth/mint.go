package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what a token says about its holder. A backend that signs in
// its users mints one for each (Mint) and hands it to the client, which
// passes it to the gateway.
type Claims struct {
	// Subject is the user's id in the backend ("sub"): 1 to MaxSubjectBytes
	// visible ASCII characters. Parley shows it as UserIDPrefix + Subject.
	Subject string
	// Name is the display name ("name"); empty means the subject.
	Name string
	// Rooms are path.Match patterns of the rooms the holder may join
	// ("rooms"); nil leaves the claim out, which allows every room, and an
	// empty list allows none.
	Rooms []string
	// Audience ("aud") and Issuer ("iss") are left out when empty; a
	// gateway configured to check them refuses tokens without them.
	Audience string
	Issuer   string
}

// Mint signs an HS256 token for c that is valid for ttl from now, the
// format gateways configured with the same secret accept. It refuses
// claims the gateway would refuse, so a backend finds its mistakes when it
// mints rather than when its users connect.
func Mint(secret []byte, c Claims, ttl time.Duration) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("mint token: the secret is %d bytes; at least %d are needed", len(secret), MinSecretBytes)
	}
	if ttl <= 0 {
		return "", errors.New("mint token: ttl must be positive")
	}
	if err := checkSubject(c.Subject); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	tc := tokenClaims{Name: c.Name}
	if c.Rooms != nil {
		if err := checkRooms(c.Rooms); err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
		rooms := append([]string{}, c.Rooms...)
		tc.Rooms = &rooms
	}
	now := time.Now()
	tc.Subject = c.Subject
	tc.Issuer = c.Issuer
	if c.Audience != "" {
		tc.Audience = jwt.ClaimStrings{c.Audience}
	}
	tc.IssuedAt = jwt.NewNumericDate(now)
	tc.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("mint token: %d bytes, over the %d gateways accept; use fewer or broader room patterns", len(tok), MaxTokenBytes)
	}
	return tok, nil
}
