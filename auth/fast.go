package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
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
		var full claims
		if json.Unmarshal(raw, &full) != nil {
			return Principal{}, false
		}
		c = flatClaims{sub: full.Subject, admin: full.Admin}
		if full.ExpiresAt != nil {
			c.exp, c.hasExp = full.ExpiresAt.Time, true
		}
		if full.NotBefore != nil {
			c.nbf, c.hasNbf = full.NotBefore.Time, true
		}
	}
	now := a.now()
	if !c.hasExp || !now.Before(c.exp.Add(leeway)) || (c.hasNbf && now.Before(c.nbf.Add(-leeway))) {
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

// scanClaims reads the claims every issuer here writes, without
// reflection: one flat object of distinct members sub (a string of
// printable ASCII without escapes), exp, nbf and iat (integers of at most
// 15 digits, exact as the parser's float64 seconds) and admin (true or
// false). It reports false for anything else.
func scanClaims(s []byte) (c flatClaims, ok bool) {
	seen := map[string]bool{}
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return c, false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return c, skipSpace(s, i+1) == len(s)
	}
	for {
		name, next, ok := plainString(s, i)
		if !ok || seen[name] {
			return c, false
		}
		seen[name] = true
		i = skipSpace(s, next)
		if i >= len(s) || s[i] != ':' {
			return c, false
		}
		i = skipSpace(s, i+1)
		switch name {
		case "sub":
			if c.sub, i, ok = plainString(s, i); !ok {
				return c, false
			}
		case "exp", "nbf", "iat":
			var n int64
			if n, i, ok = integer(s, i); !ok {
				return c, false
			}
			switch name {
			case "exp":
				c.exp, c.hasExp = time.Unix(n, 0), true
			case "nbf":
				c.nbf, c.hasNbf = time.Unix(n, 0), true
			}
		case "admin":
			switch {
			case strings.HasPrefix(string(s[i:min(i+4, len(s))]), "true"):
				c.admin, i = true, i+4
			case strings.HasPrefix(string(s[i:min(i+5, len(s))]), "false"):
				i += 5
			default:
				return c, false
			}
		default:
			return c, false
		}
		i = skipSpace(s, i)
		if i >= len(s) {
			return c, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return c, skipSpace(s, i+1) == len(s)
		default:
			return c, false
		}
	}
}

func skipSpace(s []byte, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func plainString(s []byte, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return string(s[i+1 : j]), j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", i, false
		}
	}
	return "", i, false
}

func integer(s []byte, i int) (int64, int, bool) {
	j := i
	if j < len(s) && s[j] == '-' {
		j++
	}
	start := j
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	digits := j - start
	if digits == 0 || digits > 15 || (digits > 1 && s[start] == '0') ||
		(j < len(s) && (s[j] == '.' || s[j] == 'e' || s[j] == 'E')) {
		return 0, i, false
	}
	n, err := strconv.ParseInt(string(s[i:j]), 10, 64)
	return n, j, err == nil
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
	ok = alg == "HS256"
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
	claims = append(claims, `,"nbf":`...)
	claims = strconv.AppendInt(claims, now.Unix(), 10)
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
