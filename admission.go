package crowdpass

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Answer is an HTTP answer as the idempotency store keeps it, so that a
// replay is byte for byte the first answer.
type Answer struct {
	Status int
	Body   []byte
}

// Admission asks the edge gate to admit one order request: in one atomic
// step it looks the idempotency key up and, for a new key, checks the sale
// window and takes the stock.
type Admission struct {
	OrderID     uuid.UUID
	CustomerID  string
	Fingerprint string
	CategoryID  uuid.UUID
	Quantity    int
	// Window is ESaleNotOpen or ESaleClosed outside the sale window, else "".
	Window ErrorCode
	// SoldOut is the answer stored against the key if the stock cannot cover it.
	SoldOut Answer
	// AcceptedAt is when this attempt accepts the order, kept with the key
	// while it is in flight.
	AcceptedAt Time
	// Remaining is the category's remaining tickets as the catalog last read
	// them from PostgreSQL (RemainingKnown): a gate that has lost the
	// category's stock (Redis flushed) starts it again from there, an upper
	// bound since tickets never come back, instead of admitting blind.
	Remaining      int
	RemainingKnown bool
	// AskStock, for a new key whose category the gate has lost the stock
	// of, makes the admission change nothing and answer StockUnknown, so
	// that the caller rebuilds the stock and asks again (the API counts its
	// own queued orders, which remaining does not). It wins over Remaining.
	AskStock bool
}

// Verdict is what the gate made of an admission.
type Verdict int

const (
	// Admitted: the key is now in flight and Taken tickets were taken from
	// the gate (0 when the gate does not know the category's stock).
	Admitted Verdict = iota + 1
	// Replay: the key was answered before; Answer is that answer.
	Replay
	// Mismatch: the key was used by this customer for another payload.
	Mismatch
	// InProgress: the key's first request is still in flight.
	InProgress
	// OutsideWindow: the sale is not open; nothing was stored.
	OutsideWindow
	// SoldOut: the stock cannot cover the order; the sold-out answer was stored.
	SoldOut
	// StockUnknown: the key is new and the gate has lost its category's
	// stock; nothing was stored (Admission.AskStock).
	StockUnknown
)

// AdmissionResult is the gate's verdict.
type AdmissionResult struct {
	Verdict Verdict
	Answer  Answer
	Taken   int
	// Stock is, for SoldOut found by looking at the stock, the gate's stock
	// then; StockKnown says it was looked at.
	Stock      int
	StockKnown bool
	// TookOver is, for Admitted, whether the key was taken over from an
	// attempt that died before answering: its order may be queued already.
	TookOver bool
	// AcceptedAt is, for a TookOver admission, the acceptance time the order
	// must be queued and answered with: the dead attempt's (the attempt's
	// own for a mark written before marks kept it); zero otherwise.
	AcceptedAt Time
	// Recovering is, for an Admitted or SoldOut given while Redis recovers
	// from losing its keys, when the recovery ends: another process may
	// write back an answer it gave the key before the loss until then, and
	// the caller looks at the key again after it. Zero otherwise.
	Recovering time.Time
}

// KeyRecord is what the gate remembers of an idempotency key.
type KeyRecord struct {
	CustomerID string
	// Fingerprint is the payload's (OrderPayload.Fingerprint) the key was
	// first used with.
	Fingerprint string
	Answer      Answer
	InFlight    bool
	// WrittenBack marks a refusal a process wrote back after Redis lost
	// its keys (gate.Restore), where a refusal given anew since stood.
	WrittenBack bool
	// Decided is the order as decided, where the record is this process's
	// memory of an outcome it saw (api.Recent); nil while pending.
	Decided *Order
	// FromOrder marks an Answer rebuilt from the decided order itself (its
	// outcome, or PostgreSQL): the 202 the order was accepted with, which
	// takes the place of any other 202 of its payload (Gate.Remember).
	FromOrder bool
}

// KeyAnswer is the answer a process gave an idempotency key (the key's
// order id, its customer and payload): what it writes back into Redis when
// Redis has lost its keys.
type KeyAnswer struct {
	OrderID     uuid.UUID
	CustomerID  string
	Fingerprint string
	Answer      Answer
}

// OrderPayload is what POST /orders asks for.
type OrderPayload struct {
	EventID    uuid.UUID
	CategoryID uuid.UUID
	Quantity   int
}

// Fingerprint identifies a payload: the same key with another fingerprint
// is a mismatch.
func (p OrderPayload) Fingerprint() string {
	// "<event>|<category>|<quantity>", built without fmt: this runs for
	// every POST /orders.
	var buf [96]byte
	b := appendUUID(buf[:0], p.EventID)
	b = append(b, '|')
	b = appendUUID(b, p.CategoryID)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(p.Quantity), 10)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// appendUUID appends u in its canonical form, as u.String() writes it.
func appendUUID(b []byte, u uuid.UUID) []byte {
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return append(b, s[:]...)
}

// ParseIdempotencyKey reads an Idempotency-Key header value: a bare key, or
// the key as an RFC 8941 sf-string ("abc", with \" and \\ escapes). Both
// forms name the same key. The key itself must be 1 to 255 visible ASCII bytes.
func ParseIdempotencyKey(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		inner := v[1 : len(v)-1]
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			switch {
			case c == '\\':
				if i+1 == len(inner) || (inner[i+1] != '"' && inner[i+1] != '\\') {
					return "", fmt.Errorf("has a bad escape in its quoted form")
				}
				i++
				b.WriteByte(inner[i])
			case c == '"':
				return "", fmt.Errorf("has an unescaped quote in its quoted form")
			default:
				b.WriteByte(c)
			}
		}
		v = b.String()
	}
	if err := ValidateIdempotencyKey(v); err != nil {
		return "", err
	}
	return v, nil
}
