package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerifyFast holds the fast path to the general parser: every token it
// accepts, the parser accepts for the same principal.
func FuzzVerifyFast(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	a, _ := New([]byte("secret"), func() time.Time { return now })
	sign := func(m jwt.MapClaims) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, m).SignedString([]byte("secret"))
		return s
	}
	good, _ := a.Issue("alice", true, time.Hour)
	for _, seed := range []string{
		good, good + "x", strings.Replace(good, ".", "..", 1),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() + 3}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() - 3}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() - 30}),
		sign(jwt.MapClaims{"sub": "bob", "exp": 1.8e9 + 0.5, "nbf": now.Unix() + 4}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() + 60, "nbf": now.Unix() + 60}),
		sign(jwt.MapClaims{"sub": "bob", "exp": "soon"}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() + 60, "admin": "yes"}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() + 60, "aud": 7}),
		sign(jwt.MapClaims{"sub": 5, "exp": now.Unix() + 60}),
		sign(jwt.MapClaims{"exp": now.Unix() + 60}),
		sign(jwt.MapClaims{"sub": "b\u00f6b", "exp": now.Unix() + 60, "admin": false, "iat": -5}),
		sign(jwt.MapClaims{"sub": "bob", "exp": 1e15, "admin": true}),
		sign(jwt.MapClaims{"sub": "bob", "exp": now.Unix() + 60, "nbf": nil}),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		p, ok := a.verifyFast(token)
		if !ok {
			return
		}
		q, err := a.verifyGeneral(token)
		if err != nil || p != q {
			t.Fatalf("%q: fast %+v, general %+v %v", token, p, q, err)
		}
	})
}

func TestVerifyFastTakesIssuedTokens(t *testing.T) {
	a, _ := New([]byte("secret"), nil)
	tok, _ := a.Issue("alice", false, time.Hour)
	if p, ok := a.verifyFast(tok); !ok || p.Customer != "alice" || p.Admin {
		t.Fatalf("verifyFast(issued) = %+v, %v", p, ok)
	}
}

// issueFast writes golang-jwt's token byte for byte.
func TestIssueFastMatchesGolangJWT(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a, _ := New([]byte("secret"), func() time.Time { return now })
	for _, tt := range []struct {
		customer string
		admin    bool
		fast     bool
	}{
		{"rush-1a2b-999999", false, true}, {"alice", true, true}, {"a b~!#$%", false, true},
		{"a<b", false, false}, {`a"b`, false, false}, {"b\u00f6b", false, false}, {"a\tb", false, false},
	} {
		want, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{Admin: tt.admin, RegisteredClaims: jwt.RegisteredClaims{
			Subject: tt.customer, IssuedAt: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		}}).SignedString([]byte("secret"))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := a.issueFast(tt.customer, tt.admin, now, now.Add(time.Hour))
		if ok != tt.fast || (ok && got != want) {
			t.Errorf("issueFast(%q, %v) = %q, %v; want %q, %v", tt.customer, tt.admin, got, ok, want, tt.fast)
		}
		if issued, err := a.Issue(tt.customer, tt.admin, time.Hour); err != nil || issued != want {
			t.Errorf("Issue(%q, %v) = %q, %v; want %q", tt.customer, tt.admin, issued, err, want)
		}
	}
}
