package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strings"
	"sync"
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
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil || c.ExpiresAt == nil {
		return Principal{}, false
	}
	now := a.now()
	if !now.Before(c.ExpiresAt.Add(leeway)) || (c.NotBefore != nil && now.Before(c.NotBefore.Add(-leeway))) {
		return Principal{}, false
	}
	if validCustomer(c.Subject) != nil {
		return Principal{}, false
	}
	return Principal{Customer: c.Subject, Admin: c.Admin}, true
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
