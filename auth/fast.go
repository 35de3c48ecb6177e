package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crowdpass/crowdpass/internal/flatjson"
)

// verifyFast verifies the usual token (a known HS256 header, a good
// signature, valid claims) without the general parser, which costs a map
// decode of the header and several copies per request. It reports false
// for anything else; Verify then runs the general parser, which alone
// decides what is wrong. Whatever verifyFast accepts, the parser accepts
// with the same principal (FuzzVerifyFast holds it to that).
func (a *Authority) verifyFast(token string) (Principal, bool) {
	header, rest, ok := strings.Cut(token, ".")
	if !ok {
		return Principal{}, false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || len(sig) != base64.RawURLEncoding.EncodedLen(sha256.Size) || !a.headers.known(header) {
		return Principal{}, false
	}
	var got [sha256.Size]byte
	if n, err := base64.RawURLEncoding.Decode(got[:], []byte(sig)); err != nil || n != sha256.Size {
		return Principal{}, false
	}
	mac := a.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(token[:len(header)+1+len(payload)]))
	var want [sha256.Size]byte
	sum := mac.Sum(want[:0])
	a.macs.Put(mac)
	if !hmac.Equal(sum, got[:]) {
		return Principal{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Principal{}, false
	}
	c, ok := scanClaims(raw)
	if !ok {
		return Principal{}, false // unusual claims: the general parser reads them
	}
	now := a.now()
	if !c.hasExp || !now.Before(c.exp) || (c.hasNbf && now.Before(c.nbf)) {
		return Principal{}, false
	}
	if validCustomer(c.sub) != nil {
		return Principal{}, false
	}
	return Principal{Customer: c.sub, Admin: c.admin}, true
}

// flatClaims are the claims Verify looks at.
type flatClaims struct {
	sub            string
	admin          bool
	exp, nbf       time.Time
	hasExp, hasNbf bool
}

var claimNames = [...]string{"sub", "exp", "nbf", "iat", "admin"}

// scanClaims reads the claims every issuer here writes, without
// reflection: distinct members sub (a plain string), exp, nbf and iat
// (integers, exact as the parser's float64 seconds) and admin (true or
// false), in flatjson's plain forms. It reports false for anything else.
func scanClaims(s []byte) (c flatClaims, ok bool) {
	var seen [len(claimNames)]bool
	ok = flatjson.Members(s, func(name string, v flatjson.Value) bool {
		k := slices.Index(claimNames[:], name)
		if k < 0 || seen[k] {
			return false
		}
		seen[k] = true
		switch {
		case name == "sub" && v.Kind == flatjson.String:
			c.sub = v.Str
		case name == "exp" && v.Kind == flatjson.Int:
			c.exp, c.hasExp = time.Unix(v.Int, 0), true
		case name == "nbf" && v.Kind == flatjson.Int:
			c.nbf, c.hasNbf = time.Unix(v.Int, 0), true
		case name == "iat" && v.Kind == flatjson.Int:
		case name == "admin" && v.Kind == flatjson.Bool:
			c.admin = v.Bool
		default:
			return false
		}
		return true
	})
	return c, ok
}

// headerCache remembers the few header segments seen that are JSON objects
// with "alg": "HS256"; every issuer sends the same one or two.
type headerCache struct {
	mu sync.RWMutex
	ok map[string]bool
}

const maxHeaders = 16

func (h *headerCache) known(seg string) bool {
	h.mu.RLock()
	ok, seen := h.ok[seg]
	h.mu.RUnlock()
	if seen {
		return ok
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return false
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	alg, _ := m["alg"].(string)
	_, crit := m["crit"]
	ok = alg == "HS256" && !crit
	if ok {
		h.mu.Lock()
		if h.ok == nil {
			h.ok = map[string]bool{}
		}
		if len(h.ok) < maxHeaders {
			h.ok[seg] = true
		}
		h.mu.Unlock()
	}
	return ok
}

func newMACPool(secret []byte) *sync.Pool {
	return &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
}

// hs256Header is the header segment golang-jwt writes for HS256.
var hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// issueFast writes the token golang-jwt would, byte for byte, for a subject
// of printable ASCII without quote or backslash (the load generator's
// million buyers); it reports false for any other subject.
func (a *Authority) issueFast(customer string, admin bool, now, exp time.Time) (string, bool) {
	for i := range len(customer) {
		if c := customer[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return "", false // encoding/json escapes these
		}
	}
	var buf [160]byte
	claims := buf[:0]
	if admin {
		claims = append(claims, `{"admin":true,"sub":"`...)
	} else {
		claims = append(claims, `{"sub":"`...)
	}
	claims = append(claims, customer...)
	claims = append(claims, `","exp":`...)
	claims = strconv.AppendInt(claims, exp.Unix(), 10)
	claims = append(claims, `,"iat":`...)
	claims = strconv.AppendInt(claims, now.Unix(), 10)
	claims = append(claims, '}')

	enc := base64.RawURLEncoding
	tok := make([]byte, 0, len(hs256Header)+1+enc.EncodedLen(len(claims))+1+enc.EncodedLen(sha256.Size))
	tok = append(tok, hs256Header...)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, claims)
	mac := a.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(tok)
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	a.macs.Put(mac)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, sum[:])
	return string(tok), true
}
