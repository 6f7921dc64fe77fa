package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// idp is an identity provider on loopback: it publishes a JWKS with one RSA
// and one EC key and signs tokens with them.
type idp struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	srv *httptest.Server
}

func newIDP(t *testing.T) *idp {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []any{
		map[string]string{"kty": "RSA", "kid": "r1", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		map[string]string{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ek.X.FillBytes(make([]byte, 32))), "y": b64(ek.Y.FillBytes(make([]byte, 32)))},
	}})
	p := &idp{rsa: rk, ec: ek}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwks) }))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) sign(t *testing.T, alg, kid string, claims map[string]any) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	input := enc(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"}) + "." + enc(claims)
	h := sha256.Sum256([]byte(input))
	var sig []byte
	switch alg {
	case "RS256":
		sig, _ = rsa.SignPKCS1v15(rand.Reader, p.rsa, crypto.SHA256, h[:])
	case "ES256":
		r, s, _ := ecdsa.Sign(rand.Reader, p.ec, h[:])
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Optional JWT: tokens signed by the JWKS's keys carry their role; anything
// expired, foreign, unsigned or tampered is refused.
func TestJWTFromJWKS(t *testing.T) {
	p := newIDP(t)
	cfg := testConfig(t.TempDir())
	cfg.JWTJWKSURL, cfg.JWTIssuer, cfg.JWTAudience = p.srv.URL, "https://idp.example", "imageflow"
	ts := startServer(t, cfg)
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(role any, mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": "https://idp.example", "aud": []string{"other", "imageflow"}, "exp": exp, "role": role}
		if mod != nil {
			mod(c)
		}
		return c
	}
	operator := p.sign(t, "RS256", "r1", claims("operator", nil))
	viewer := p.sign(t, "ES256", "e1", claims([]string{"viewer"}, nil))
	if st, body, _ := ts.do("POST", "/api/v1/cameras", operator, map[string]any{"id": "j1", "source": "publish"}); st != 201 {
		t.Fatalf("operator JWT: %d %s", st, body)
	}
	if st, body, _ := ts.do("GET", "/api/v1/cameras/j1", viewer, nil); st != 200 {
		t.Fatalf("viewer JWT read: %d %s", st, body)
	}
	st, body, _ := ts.do("DELETE", "/api/v1/cameras/j1", viewer, nil)
	expectError(t, st, body, 403, "operator")
	tampered := strings.Split(viewer, ".")
	tampered[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://idp.example","aud":"imageflow","exp":` + itoa64(exp) + `,"role":"admin"}`))
	for name, tok := range map[string]string{
		"expired":      p.sign(t, "RS256", "r1", claims("admin", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })),
		"no exp":       p.sign(t, "RS256", "r1", claims("admin", func(c map[string]any) { delete(c, "exp") })),
		"issuer":       p.sign(t, "RS256", "r1", claims("admin", func(c map[string]any) { c["iss"] = "https://evil.example" })),
		"audience":     p.sign(t, "RS256", "r1", claims("admin", func(c map[string]any) { c["aud"] = "else" })),
		"no role":      p.sign(t, "RS256", "r1", claims("root", nil)),
		"unknown kid":  p.sign(t, "RS256", "zz", claims("admin", nil)),
		"alg mismatch": p.sign(t, "RS256", "e1", claims("admin", nil)),
		"alg none":     strings.Join(strings.Split(p.sign(t, "RS256", "r1", claims("admin", nil)), ".")[:2], ".") + ".",
		"tampered":     strings.Join(tampered, "."),
	} {
		st, body, _ := ts.do("DELETE", "/api/v1/cameras/j1", tok, nil)
		if st != 401 {
			t.Errorf("%s: %d %s", name, st, body)
		}
	}
	if st, _, _ := ts.do("GET", "/api/v1/cameras/j1", operator, nil); st != 200 {
		t.Fatalf("camera gone: %d", st)
	}
}

func itoa64(n int64) string { return big.NewInt(n).String() }
