// Package auth issues and verifies the bearer tokens of the contract: JWT
// HS256 signed with JWT_SECRET, the customer in sub, admin: true for operators.
package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crowdpass/crowdpass"
)

// Principal is who a verified token speaks for.
type Principal struct {
	Customer string
	Admin    bool
}

// Authority signs and verifies tokens with one secret.
type Authority struct {
	secret  []byte
	now     func() time.Time
	macs    *sync.Pool // of HMAC-SHA256 keyed with secret
	headers headerCache
}

// New returns an authority for secret; now is its clock (time.Now if nil).
func New(secret []byte, now func() time.Time) (*Authority, error) {
	if len(secret) == 0 {
		return nil, errors.New("the JWT secret must not be empty")
	}
	if now == nil {
		now = time.Now
	}
	return &Authority{secret: secret, now: now, macs: newMACPool(secret)}, nil
}

type claims struct {
	Admin bool `json:"admin,omitempty"`
	jwt.RegisteredClaims
}

// Issue signs a token for customer, valid for ttl from now.
func (a *Authority) Issue(customer string, admin bool, ttl time.Duration) (string, error) {
	if err := validCustomer(customer); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", errors.New("the token lifetime must be positive")
	}
	now := a.now()
	if t, ok := a.issueFast(customer, admin, now, now.Add(ttl)); ok {
		return t, nil
	}
	c := claims{Admin: admin, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   customer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		// No nbf: it would only say "now", and a verifier whose clock is a
		// moment behind the issuer's would refuse the fresh token.
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}

// Verify checks a token's signature, exp (required) and nbf, and returns its
// principal. Every failure is an EUnauthorized error that never quotes the token.
func (a *Authority) Verify(token string) (Principal, error) {
	if p, ok := a.verifyFast(token); ok {
		return p, nil
	}
	return a.verifyGeneral(token)
}

// verifyGeneral is Verify through golang-jwt's parser.
func (a *Authority) verifyGeneral(token string) (Principal, error) {
	var c claims
	parsed, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now), // no leeway: a token past its exp is expired (contract)
	)
	if err != nil {
		return Principal{}, crowdpass.Errorf(crowdpass.EUnauthorized, "%s", reason(err))
	}
	// RFC 7515: a header's crit names extensions the verifier must
	// understand, and this one understands none.
	if _, ok := parsed.Header["crit"]; ok {
		return Principal{}, crowdpass.Errorf(crowdpass.EUnauthorized, "the token names critical extensions this server does not know")
	}
	// JSON is UTF-8; the parser would read invalid bytes in sub as U+FFFD,
	// and two subjects as one customer.
	if !utf8Claims(token) {
		return Principal{}, crowdpass.Errorf(crowdpass.EUnauthorized, "the token is malformed")
	}
	if err := validCustomer(c.Subject); err != nil {
		return Principal{}, crowdpass.Errorf(crowdpass.EUnauthorized, "the token's subject %s", err)
	}
	return Principal{Customer: c.Subject, Admin: c.Admin}, nil
}

// utf8Claims reports whether a parsed token's claims segment is UTF-8.
func utf8Claims(token string) bool {
	_, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	return err == nil && utf8.Valid(raw)
}

func validCustomer(customer string) error {
	if customer == "" || len(customer) > crowdpass.MaxCustomerIDLen {
		return fmt.Errorf("must be 1 to %d bytes", crowdpass.MaxCustomerIDLen)
	}
	if !utf8.ValidString(customer) {
		return fmt.Errorf("must be UTF-8")
	}
	// PostgreSQL text cannot hold a NUL: such an order could never be decided.
	if strings.IndexByte(customer, 0) >= 0 {
		return fmt.Errorf("must not contain a NUL byte")
	}
	return nil
}

// reason says why a token failed, in words safe to show its bearer.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature is invalid"
	default:
		return "the token is malformed"
	}
}

// BearerToken reads a request's bearer token from its Authorization header
// or, where allowQuery (browsers opening a WebSocket), its access_token
// query parameter. A token sent twice, whether in one place or in both
// differently, is refused: which one speaks would be a guess.
func BearerToken(r *http.Request, allowQuery bool) (string, error) {
	var query []string
	if allowQuery {
		query = r.URL.Query()["access_token"]
		if len(query) > 1 {
			return "", crowdpass.Errorf(crowdpass.EUnauthorized, "the access_token parameter was sent more than once")
		}
	}
	h := r.Header.Values("Authorization")
	switch {
	case len(h) == 1:
		scheme, tok, ok := strings.Cut(h[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", crowdpass.Errorf(crowdpass.EUnauthorized, "the Authorization header must be a Bearer token")
		}
		tok = strings.TrimSpace(tok)
		if len(query) == 1 && query[0] != "" && query[0] != tok {
			return "", crowdpass.Errorf(crowdpass.EUnauthorized, "the Authorization header and access_token name different tokens")
		}
		return tok, nil
	case len(h) > 1:
		return "", crowdpass.Errorf(crowdpass.EUnauthorized, "the Authorization header was sent more than once")
	case len(query) == 1 && query[0] != "":
		return query[0], nil
	default:
		return "", crowdpass.Errorf(crowdpass.EUnauthorized, "a bearer token is required")
	}
}
