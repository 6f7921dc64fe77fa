package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

// jwksVerifier accepts JSON Web Tokens signed (RS256 or ES256) by a key of
// the JWKS the identity provider publishes, and reads the role from a claim.
// Keys are fetched on first use, kept for jwksTTL, and fetched again at most
// every jwksMinRefetch when a token names a key not known yet (rotation).
type jwksVerifier struct {
	url, issuer, audience, roleClaim string
	client                           *http.Client

	mu      sync.Mutex
	keys    map[string]crypto.PublicKey
	fetched time.Time
}

const (
	jwksTTL        = 5 * time.Minute
	jwksMinRefetch = 30 * time.Second
	maxJWKSBytes   = 1 << 20
)

func newJWKSVerifier(c *Config) *jwksVerifier {
	if c.JWTJWKSURL == "" {
		return nil
	}
	claim := c.JWTRoleClaim
	if claim == "" {
		claim = "role"
	}
	return &jwksVerifier{url: c.JWTJWKSURL, issuer: c.JWTIssuer, audience: c.JWTAudience, roleClaim: claim,
		client: &http.Client{Timeout: 5 * time.Second}}
}

// looksLikeJWT tells a JWT (three base64url parts) from an opaque token.
func looksLikeJWT(tok string) bool { return strings.Count(tok, ".") == 2 && len(tok) < 16<<10 }

// role verifies tok and gives its role; RoleNone for anything not valid.
func (v *jwksVerifier) role(tok string) rest.Role {
	role, err := v.verify(tok, time.Now())
	if err != nil {
		return rest.RoleNone
	}
	return role
}

func (v *jwksVerifier) verify(tok string, now time.Time) (rest.Role, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, errors.New("not a JWT")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return 0, err
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return 0, err
	}
	key, err := v.key(hdr.Kid)
	if err != nil {
		return 0, err
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch pub := key.(type) {
	case *rsa.PublicKey:
		if hdr.Alg != "RS256" || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
			return 0, errors.New("bad signature")
		}
	case *ecdsa.PublicKey:
		if hdr.Alg != "ES256" || len(sig) != 64 ||
			!ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return 0, errors.New("bad signature")
		}
	default:
		return 0, errors.New("unsupported key")
	}
	var claims map[string]any
	if err := decodeSegment(parts[1], &claims); err != nil {
		return 0, err
	}
	exp, ok := claims["exp"].(float64)
	if !ok || now.Unix() >= int64(exp) {
		return 0, errors.New("expired or no exp")
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Unix() < int64(nbf) {
		return 0, errors.New("not valid yet")
	}
	if v.issuer != "" && claims["iss"] != v.issuer {
		return 0, errors.New("wrong issuer")
	}
	if v.audience != "" && !hasString(claims["aud"], v.audience) {
		return 0, errors.New("wrong audience")
	}
	best := rest.RoleNone
	forEachString(claims[v.roleClaim], func(s string) {
		if r, ok := rest.ParseRole(s); ok && r > best {
			best = r
		}
	})
	if best == rest.RoleNone {
		return 0, fmt.Errorf("no role in claim %q", v.roleClaim)
	}
	return best, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func forEachString(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				fn(s)
			}
		}
	}
}

func hasString(v any, want string) bool {
	found := false
	forEachString(v, func(s string) { found = found || s == want })
	return found
}

// key returns the public key kid names, fetching the JWKS when it is stale
// or does not know kid.
func (v *jwksVerifier) key(kid string) (crypto.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	k, ok := v.keys[kid]
	age := time.Since(v.fetched)
	if ok && age < jwksTTL {
		return k, nil
	}
	if v.keys == nil || age >= jwksMinRefetch {
		keys, err := v.fetch()
		v.fetched = time.Now()
		if err == nil {
			v.keys = keys
		}
		k, ok = v.keys[kid]
	}
	if !ok {
		return nil, fmt.Errorf("unknown key %q", kid)
	}
	return k, nil
}

func (v *jwksVerifier) fetch() (map[string]crypto.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS %s: %s", v.url, resp.Status)
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, err
	}
	out := map[string]crypto.PublicKey{}
	b64 := func(s string) *big.Int {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(b)
	}
	for _, k := range set.Keys {
		switch {
		case k.Kty == "RSA" && k.N != "" && k.E != "":
			e := b64(k.E)
			if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31 {
				continue
			}
			out[k.Kid] = &rsa.PublicKey{N: b64(k.N), E: int(e.Int64())}
		case k.Kty == "EC" && k.Crv == "P-256":
			pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: b64(k.X), Y: b64(k.Y)}
			if !pub.Curve.IsOnCurve(pub.X, pub.Y) {
				continue
			}
			out[k.Kid] = pub
		}
	}
	return out, nil
}
