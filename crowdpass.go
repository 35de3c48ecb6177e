// Package crowdpass holds the domain of the CrowdPass ticket-sale core: events
// and their ticket categories, orders and their outcomes, the problem codes of
// the external contract, and the validation rules every role shares.
//
// It imports nothing of the project; every other package speaks its types.
package crowdpass

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// OrderStatus is where an order stands.
type OrderStatus string

const (
	StatusPending   OrderStatus = "pending"
	StatusConfirmed OrderStatus = "confirmed"
	StatusRejected  OrderStatus = "rejected"
)

// Reason says why an order was rejected.
type Reason string

const (
	ReasonSoldOut       Reason = "sold_out"
	ReasonLimitExceeded Reason = "limit_exceeded"
)

// Outcome event types, also the routing keys on the order_events exchange.
const (
	EventOrderConfirmed = "order.confirmed"
	EventOrderRejected  = "order.rejected"
)

// DefaultMaxPerCustomer bounds one customer's tickets for an event unless the
// event says otherwise.
const DefaultMaxPerCustomer = 4

// Limits on what the catalog accepts.
const (
	MaxNameLen        = 200
	MaxCategoryName   = 100
	MaxCategories     = 50
	MaxCapacity       = 10_000_000
	MaxPriceCents     = 1_000_000_000_00
	MaxPerCustomerCap = 1000
	MaxCustomerIDLen  = 255
	MaxKeyLen         = 255
)

// Time is an instant as the contract writes it: RFC 3339 in UTC with exactly
// six fractional digits, PostgreSQL's precision, so the same instant reads
// the same wherever it appears.
type Time struct{ time.Time }

// TimeLayout is the wire layout of Time.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// NewTime truncates t to PostgreSQL's microseconds.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Microsecond)} }

// String formats t in TimeLayout.
func (t Time) String() string { return t.UTC().Format(TimeLayout) }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler; any RFC 3339 instant is accepted.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	parsed, err := ParseTime(s)
	if err != nil {
		return err
	}
	*t = parsed
	return nil
}

var errNotRFC3339 = errors.New("not an RFC 3339 time")

// ParseTime reads an RFC 3339 time: its "T" and "Z" in either case, as the
// RFC allows, and an offset of at most 23:59. Go's parser also takes hours
// of 24 and minutes of 60 in the offset, and a comma before the fraction.
func ParseTime(s string) (Time, error) {
	s = strings.ToUpper(s)
	if strings.Contains(s, ",") {
		return Time{}, errNotRFC3339
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Time{}, errNotRFC3339
	}
	if !strings.HasSuffix(s, "Z") && (len(s) < 6 || s[len(s)-5:len(s)-3] >= "24" || s[len(s)-2:] >= "60") {
		return Time{}, errNotRFC3339
	}
	return NewTime(t), nil
}

var errNotUUID = errors.New("not a UUID")

// ParseID reads an id as every answer writes it: a UUID in its 36
// characters, hyphens included, hex digits in either case. uuid.Parse also
// takes braces, a urn:uuid: prefix and no hyphens, forms no client is given.
func ParseID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, errNotUUID
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, errNotUUID
	}
	return id, nil
}

// Event is a sale: a window and its ticket categories.
type Event struct {
	ID             uuid.UUID  `json:"event_id"`
	Name           string     `json:"name"`
	OpensAt        Time       `json:"opens_at"`
	ClosesAt       *Time      `json:"closes_at,omitempty"`
	MaxPerCustomer int        `json:"max_per_customer"`
	Categories     []Category `json:"categories"`
}

// Category is one kind of ticket of an event, with its own stock.
type Category struct {
	ID         uuid.UUID `json:"category_id"`
	Name       string    `json:"name"`
	Capacity   int       `json:"capacity"`
	Remaining  int       `json:"remaining"`
	PriceCents int64     `json:"price_cents"`
}

// Category returns the event's category with the given id.
func (e *Event) Category(id uuid.UUID) (Category, bool) {
	for _, c := range e.Categories {
		if c.ID == id {
			return c, true
		}
	}
	return Category{}, false
}

// SaleState tells whether the event sells at instant now.
func (e *Event) SaleState(now time.Time) ErrorCode {
	if now.Before(e.OpensAt.Time) {
		return ESaleNotOpen
	}
	if e.ClosesAt != nil && !now.Before(e.ClosesAt.Time) {
		return ESaleClosed
	}
	return ""
}

// EventSpec is what it takes to create an event.
type EventSpec struct {
	Name           string         `json:"name"`
	OpensAt        *Time          `json:"opens_at,omitempty"`
	ClosesAt       *Time          `json:"closes_at,omitempty"`
	MaxPerCustomer *int           `json:"max_per_customer,omitempty"`
	Categories     []CategorySpec `json:"categories"`
}

// CategorySpec is what it takes to create a category.
type CategorySpec struct {
	Name       string `json:"name"`
	Capacity   int    `json:"capacity"`
	PriceCents int64  `json:"price_cents"`
}

// Validate checks the spec and returns an EValidation error listing each problem.
func (s *EventSpec) Validate() error {
	var v validator
	if strings.TrimSpace(s.Name) == "" {
		v.add("name", "is required, and not blank")
	} else if len(s.Name) > MaxNameLen {
		v.add("name", fmt.Sprintf("must be at most %d bytes", MaxNameLen))
	} else if strings.IndexByte(s.Name, 0) >= 0 {
		v.add("name", "must not contain a NUL character") // PostgreSQL text cannot hold one
	}
	if s.MaxPerCustomer != nil && (*s.MaxPerCustomer < 1 || *s.MaxPerCustomer > MaxPerCustomerCap) {
		v.add("max_per_customer", fmt.Sprintf("must be between 1 and %d", MaxPerCustomerCap))
	}
	if s.ClosesAt != nil {
		opens := time.Now()
		if s.OpensAt != nil {
			opens = s.OpensAt.Time
		}
		if !s.ClosesAt.After(opens) {
			v.add("closes_at", "must be after opens_at")
		}
	}
	switch {
	case len(s.Categories) == 0:
		v.add("categories", "at least one category is required")
	case len(s.Categories) > MaxCategories:
		v.add("categories", fmt.Sprintf("at most %d categories", MaxCategories))
	}
	seen := make(map[string]bool, len(s.Categories))
	for i, c := range s.Categories {
		field := fmt.Sprintf("categories[%d]", i)
		switch {
		case strings.TrimSpace(c.Name) == "":
			v.add(field+".name", "is required, and not blank")
		case len(c.Name) > MaxCategoryName:
			v.add(field+".name", fmt.Sprintf("must be at most %d bytes", MaxCategoryName))
		case strings.IndexByte(c.Name, 0) >= 0:
			v.add(field+".name", "must not contain a NUL character")
		case seen[c.Name]:
			v.add(field+".name", "is used by another category of this event")
		}
		seen[c.Name] = true
		if c.Capacity < 1 || c.Capacity > MaxCapacity {
			v.add(field+".capacity", fmt.Sprintf("must be between 1 and %d", MaxCapacity))
		}
		if c.PriceCents < 0 || c.PriceCents > MaxPriceCents {
			v.add(field+".price_cents", fmt.Sprintf("must be between 0 and %d", int64(MaxPriceCents)))
		}
	}
	return v.err()
}

// OrderID derives an order's id from who asked and under which idempotency
// key, so a retried request gets the same id even when every cache forgot it.
func OrderID(customerID, key string) uuid.UUID {
	// Length-prefixing the customer keeps ("ab","c") and ("a","bc") apart.
	data := make([]byte, 0, 8+len(customerID)+len(key))
	data = strconv.AppendInt(data, int64(len(customerID)), 10)
	data = append(data, ':')
	data = append(data, customerID...)
	data = append(data, ':')
	data = append(data, key...)
	return uuid.NewHash(sha256.New(), orderIDSpace, data, 8)
}

// orderIDSpace is the name space of order ids (UUIDv8, SHA-256 based).
var orderIDSpace = uuid.MustParse("6f1c4d3e-2b7a-4f0e-9c55-0a7d3e1b9c42")

// OrderRequest is an accepted order as the API queues it on ticket_orders
// and as a worker decides it. It is the queue's message format.
type OrderRequest struct {
	OrderID        uuid.UUID `json:"order_id"`
	CustomerID     string    `json:"customer_id"`
	IdempotencyKey string    `json:"idempotency_key"`
	EventID        uuid.UUID `json:"event_id"`
	CategoryID     uuid.UUID `json:"category_id"`
	Quantity       int       `json:"quantity"`
	AcceptedAt     Time      `json:"accepted_at"`
}

// Validate checks a request read from the queue; a request that fails can
// never be decided and belongs in the dead-letter queue.
func (r *OrderRequest) Validate() error {
	var v validator
	if r.CustomerID == "" || len(r.CustomerID) > MaxCustomerIDLen || strings.IndexByte(r.CustomerID, 0) >= 0 {
		v.add("customer_id", fmt.Sprintf("must be 1 to %d bytes, without NUL", MaxCustomerIDLen))
	}
	if err := ValidateIdempotencyKey(r.IdempotencyKey); err != nil {
		v.add("idempotency_key", err.Error())
	}
	if r.EventID == uuid.Nil {
		v.add("event_id", "is required")
	}
	if r.CategoryID == uuid.Nil {
		v.add("category_id", "is required")
	}
	if r.Quantity < 1 || r.Quantity > MaxPerCustomerCap {
		v.add("quantity", fmt.Sprintf("must be between 1 and %d", MaxPerCustomerCap))
	}
	if r.AcceptedAt.IsZero() {
		v.add("accepted_at", "is required")
	}
	if r.OrderID != OrderID(r.CustomerID, r.IdempotencyKey) {
		v.add("order_id", "does not match the customer and idempotency key")
	}
	return v.err()
}

// ValidateIdempotencyKey checks a bare key: 1 to 255 visible ASCII bytes.
func ValidateIdempotencyKey(key string) error {
	if key == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("must be at most %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return fmt.Errorf("must be visible ASCII (0x21-0x7E)")
		}
	}
	return nil
}

// Ticket is one seat of a confirmed order.
type Ticket struct {
	ID   uuid.UUID `json:"ticket_id"`
	Seat int       `json:"seat"`
}

// Order is an order as its owner sees it.
type Order struct {
	ID          uuid.UUID   `json:"order_id"`
	Status      OrderStatus `json:"status"`
	Reason      Reason      `json:"reason,omitempty"`
	EventID     uuid.UUID   `json:"event_id"`
	CategoryID  uuid.UUID   `json:"category_id"`
	Quantity    int         `json:"quantity"`
	Tickets     []Ticket    `json:"tickets"`
	AcceptedAt  Time        `json:"accepted_at"`
	ProcessedAt *Time       `json:"processed_at,omitempty"`
	CustomerID  string      `json:"-"`
}

// Outcome is a decided order as the worker writes it to the outbox and the
// relay publishes it on order_events. It carries the customer so the notifier
// can route it; the customer id is never sent to a browser.
type Outcome struct {
	Type       string `json:"type"`
	CustomerID string `json:"customer_id"`
	Order
}

// MarshalJSON writes the order's fields beside type and customer_id.
func (o Outcome) MarshalJSON() ([]byte, error) {
	type order Order // drops Order's methods, keeps its tags
	return json.Marshal(struct {
		Type       string `json:"type"`
		CustomerID string `json:"customer_id"`
		order
	}{o.Type, o.CustomerID, order(o.Order)})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (o *Outcome) UnmarshalJSON(b []byte) error {
	type order Order
	var v struct {
		Type       string `json:"type"`
		CustomerID string `json:"customer_id"`
		order
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = Outcome{Type: v.Type, CustomerID: v.CustomerID, Order: Order(v.order)}
	o.Order.CustomerID = v.CustomerID
	return nil
}

// NewOutcome is the outcome announcing a decided order.
func NewOutcome(o Order) Outcome {
	typ := EventOrderConfirmed
	if o.Status == StatusRejected {
		typ = EventOrderRejected
	}
	return Outcome{Type: typ, CustomerID: o.CustomerID, Order: o}
}

// Decision is what became of one order request handed to a worker.
type Decision struct {
	Request OrderRequest
	// Order is the order as decided now; nil when the order had been decided
	// before (a redelivery or a duplicate), which changes nothing.
	Order *Order
	// Invalid is set when the request can never be decided, for example
	// because its category does not exist; it belongs in the dead-letter queue.
	Invalid error
}

// OutboxMessage is one outbox row on its way to order_events.
type OutboxMessage struct {
	ID          int64
	AggregateID uuid.UUID
	EventType   string
	Payload     []byte
}

// NotificationBuckets are the histogram buckets, in seconds, of every leg
// of a notification's way from the worker's commit to the buyer's socket
// (worker, relay, notifier), so that the legs' percentiles line up.
var NotificationBuckets = []float64{.001, .0025, .005, .01, .02, .03, .05, .075, .1, .15, .25, .5, 1, 2.5}
