package auth_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
)

func TestIssuedTokenVerifies(t *testing.T) {
	t.Parallel()
	a, _ := auth.New([]byte("secret"), nil)
	tok, err := a.Issue("alice", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Verify(tok)
	if err != nil || p.Customer != "alice" || !p.Admin {
		t.Fatalf("Verify = %+v, %v", p, err)
	}
}

func TestBadTokensAreUnauthorized(t *testing.T) {
	t.Parallel()
	now := time.Now()
	a, _ := auth.New([]byte("secret"), func() time.Time { return now })
	other, _ := auth.New([]byte("other"), nil)
	good, _ := a.Issue("alice", false, time.Hour)
	foreign, _ := other.Issue("alice", false, time.Hour)
	past, _ := auth.New([]byte("secret"), func() time.Time { return now.Add(-2 * time.Hour) })
	expired, _ := past.Issue("alice", false, time.Hour)
	notYet, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}).SignedString([]byte("secret"))
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString([]byte("secret"))
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	longSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": strings.Repeat("x", 256), "exp": now.Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	nulSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ali\x00ce", "exp": now.Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	// No leeway: a second past exp, or a second before nbf, is refused.
	justExpired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Second).Unix()}).SignedString([]byte("secret"))
	justEarly, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "nbf": now.Add(2 * time.Second).Unix(), "exp": now.Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	// One character of the signature changed for another, well before its
	// last, whose low bits are padding: a change there can decode to the
	// same bytes.
	i := len(good) - 5
	swap := byte('A')
	if good[i] == swap {
		swap = 'B'
	}
	tampered := good[:i] + string(swap) + good[i+1:]
	// Bytes that are not UTF-8 in sub, which encoding/json would read as
	// U+FFFD: two such subjects would be one customer.
	notUTF8 := signRaw(t, `{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf("{\"sub\":\"bad\xff\xfe\",\"exp\":%d}", now.Add(time.Hour).Unix()))
	critical := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	critical.Header["crit"] = []string{"exp"}
	withCrit, _ := critical.SignedString([]byte("secret"))

	for name, tok := range map[string]string{
		"empty": "", "garbage": "not.a.token", "foreign signature": foreign, "expired": expired,
		"not yet valid": notYet, "no exp": noExp, "no sub": noSub, "long sub": longSub, "NUL in sub": nulSub, "alg none": none,
		"tampered": tampered, "a second past exp": justExpired, "before nbf": justEarly,
		"sub not UTF-8": notUTF8, "crit header": withCrit,
	} {
		if _, err := a.Verify(tok); crowdpass.Code(err) != crowdpass.EUnauthorized {
			t.Errorf("%s: Verify error = %v, want unauthorized", name, err)
		} else if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error quotes the token", name)
		}
	}
}

// signRaw signs header and claims, taken as they are, with "secret".
func signRaw(t *testing.T, header, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// A token is read from one place only: the Authorization header, or for a
// WebSocket the access_token parameter; two tokens that differ are refused.
func TestBearerTokenComesFromOnePlace(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		header     []string
		query      string
		allowQuery bool
		want       string // "" for unauthorized
	}{
		{"header", []string{"Bearer a"}, "", false, "a"},
		{"query on a WebSocket", nil, "?access_token=a", true, "a"},
		{"query elsewhere", nil, "?access_token=a", false, ""},
		{"the same in both", []string{"Bearer a"}, "?access_token=a", true, "a"},
		{"different in both", []string{"Bearer a"}, "?access_token=b", true, ""},
		{"an empty parameter beside the header", []string{"Bearer a"}, "?access_token=", true, "a"},
		{"query twice", nil, "?access_token=a&access_token=a", true, ""},
		{"header twice", []string{"Bearer a", "Bearer a"}, "", false, ""},
		{"not bearer", []string{"Basic a"}, "", false, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/ws"+c.query, nil)
		for _, h := range c.header {
			r.Header.Add("Authorization", h)
		}
		tok, err := auth.BearerToken(r, c.allowQuery)
		switch {
		case c.want == "" && crowdpass.Code(err) != crowdpass.EUnauthorized:
			t.Errorf("%s: %q, %v; want unauthorized", c.name, tok, err)
		case c.want != "" && (err != nil || tok != c.want):
			t.Errorf("%s: %q, %v; want %q", c.name, tok, err, c.want)
		}
	}
}
