package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Signing algorithms, by the JOSE names tokens carry in "alg".
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// minRSABits is the smallest RSA key accepted, and maxRSABits the largest:
// verification cost grows with the key, and a JWKS is not trusted to be
// reasonable.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// keySource gives the verification key for a token. The algorithm is bound
// to each key, never taken from the token alone: key returns a key only for
// the algorithm that key was made for.
type keySource interface {
	// methods are the algorithms any key of the source is for.
	methods() []string
	// key returns the key for a token signed with alg whose header names
	// kid (empty when it names none).
	key(ctx context.Context, alg, kid string) (any, error)
	// describe says what the keys are, for the startup log.
	describe() string
}

// staticKey is a single key configured at startup.
type staticKey struct {
	alg  string
	k    any
	what string
}

func (s staticKey) methods() []string { return []string{s.alg} }

func (s staticKey) key(_ context.Context, alg, _ string) (any, error) {
	if alg != s.alg {
		return nil, fmt.Errorf("token is signed with %s; the key is for %s", alg, s.alg)
	}
	return s.k, nil
}

func (s staticKey) describe() string { return s.what }

func hmacKey(secret []byte) (keySource, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("the HS256 secret is %d bytes; use at least %d random bytes (openssl rand -base64 32)", len(secret), MinSecretBytes)
	}
	return staticKey{alg: algHS256, k: secret, what: "HS256 shared secret"}, nil
}

// pemKeyFile loads the public key a provider signs RS256 or ES256 tokens
// for: a PUBLIC KEY, an RSA PUBLIC KEY or a CERTIFICATE block.
func pemKeyFile(name string) (keySource, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("public key file %s: no PEM block", name)
	}
	var pub any
	switch {
	case block.Type == "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case block.Type == "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case block.Type == "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return nil, fmt.Errorf("public key file %s holds a private key; give the gateway only the public key", name)
	default:
		return nil, fmt.Errorf("public key file %s: unexpected PEM block %q", name, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("public key file %s: %w", name, err)
	}
	alg, err := algFor(pub)
	if err != nil {
		return nil, fmt.Errorf("public key file %s: %w", name, err)
	}
	return staticKey{alg: alg, k: pub, what: alg + " public key from " + name}, nil
}

// algFor is the one algorithm a public key may verify: the key's type
// decides, never the token.
func algFor(pub any) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return "", fmt.Errorf("RSA key of %d bits; %d-%d are accepted", bits, minRSABits, maxRSABits)
		}
		return algRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on %s; ES256 needs P-256", k.Curve.Params().Name)
		}
		return algES256, nil
	default:
		return "", errors.New("the key is neither RSA nor ECDSA P-256")
	}
}
