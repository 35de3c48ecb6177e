package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
)

func TestEveryProblemHasItsStatusAndCode(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(2, 1, 10)
	other := h.event(4, 10)
	future := time.Now().Add(time.Hour)
	notOpen := h.eventWindow(&future, nil)
	past := time.Now().Add(-time.Minute)
	closed := h.eventWindow(nil, &past)

	good := h.token("alice")
	expired := signed(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})
	admin, _ := h.authority.Issue("root", true, time.Hour)
	foreignSig, _ := func() (string, error) {
		a, _ := auth.New([]byte("another secret"), nil)
		return a.Issue("alice", false, time.Hour)
	}()
	body := orderJSON(event, 1, 1)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	std := func(key string) http.Header {
		return hdr("Authorization", "Bearer "+good, "Idempotency-Key", key, "Content-Type", "application/json")
	}
	withoutCT := hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k-ct")

	// A first order that sells the last ticket of category 0 for sold_out below.
	if r := h.order("bob", "first", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("setup order: %d %s", r.status, r.body)
	}
	h.waitGate(event.Categories[0].ID, 0)

	cases := []struct {
		name   string
		method string
		path   string
		header http.Header
		body   []byte
		status int
		code   crowdpass.ErrorCode
	}{
		{"no token", "POST", "/orders", hdr("Idempotency-Key", "k", "Content-Type", "application/json"), body, 401, crowdpass.EUnauthorized},
		{"no token beats no key", "POST", "/orders", hdr("Content-Type", "text/plain"), body, 401, crowdpass.EUnauthorized},
		{"not bearer", "POST", "/orders", hdr("Authorization", "Basic YTpi", "Idempotency-Key", "k"), body, 401, crowdpass.EUnauthorized},
		{"malformed token", "POST", "/orders", hdr("Authorization", "Bearer nope", "Idempotency-Key", "k"), body, 401, crowdpass.EUnauthorized},
		{"expired token", "POST", "/orders", hdr("Authorization", "Bearer "+expired, "Idempotency-Key", "k"), body, 401, crowdpass.EUnauthorized},
		{"foreign signature", "POST", "/orders", hdr("Authorization", "Bearer "+foreignSig, "Idempotency-Key", "k"), body, 401, crowdpass.EUnauthorized},
		{"non-admin creates event", "POST", "/events", std("x"), []byte(`{"name":"X","categories":[{"name":"A","capacity":1}]}`), 403, crowdpass.EForbidden},
		{"key missing", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Content-Type", "text/plain"), body, 400, crowdpass.EKeyMissing},
		{"key empty", "POST", "/orders", std(""), body, 400, crowdpass.EKeyInvalid},
		{"key quoted empty", "POST", "/orders", std(`""`), body, 400, crowdpass.EKeyInvalid},
		{"key too long", "POST", "/orders", std(strings.Repeat("k", 256)), body, 400, crowdpass.EKeyInvalid},
		{"key with space", "POST", "/orders", std("a b"), body, 400, crowdpass.EKeyInvalid},
		{"key not ascii", "POST", "/orders", std("clé"), body, 400, crowdpass.EKeyInvalid},
		{"key twice", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "a", "Idempotency-Key", "b", "Content-Type", "application/json"), body, 400, crowdpass.EKeyInvalid},
		{"key bad beats media type", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", ""), body, 400, crowdpass.EKeyInvalid},
		{"no content type", "POST", "/orders", withoutCT, body, 415, crowdpass.EUnsupportedMediaType},
		{"an event's id as a URN", "GET", "/events/urn:uuid:" + event.ID.String(), nil, nil, 404, crowdpass.ENotFound},
		{"an event's id without hyphens", "GET", "/events/" + strings.ReplaceAll(event.ID.String(), "-", ""), nil, nil, 404, crowdpass.ENotFound},
		{"content type twice", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k-ct", "Content-Type", "application/json", "Content-Type", "text/plain"), body, 415, crowdpass.EUnsupportedMediaType},
		{"json in UTF-8 is json", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k", "Content-Type", "Application/JSON; charset=UTF-8"), orderJSON(event, 1, 3), 422, crowdpass.EValidation},
		{"json in latin1 beside a bad parameter", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k-ct", "Content-Type", "application/json; charset=latin1; x"), body, 415, crowdpass.EUnsupportedMediaType},
		{"json in latin1", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k-ct", "Content-Type", "application/json; charset=latin1"), body, 415, crowdpass.EUnsupportedMediaType},
		{"json with a parameter without value", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k", "Content-Type", "application/json; charset"), orderJSON(event, 1, 3), 422, crowdpass.EValidation},
		{"text body", "POST", "/orders", hdr("Authorization", "Bearer "+good, "Idempotency-Key", "k", "Content-Type", "text/plain"), body, 415, crowdpass.EUnsupportedMediaType},
		{"too large", "POST", "/orders", std("k-big"), []byte(`{"event_id":"` + strings.Repeat("x", 17<<10) + `"}`), 413, crowdpass.EPayloadTooLarge},
		{"not json", "POST", "/orders", std("k"), []byte(`{nope`), 400, crowdpass.EMalformedBody},
		{"array", "POST", "/orders", std("k"), []byte(`[1]`), 400, crowdpass.EMalformedBody},
		{"empty body", "POST", "/orders", std("k"), nil, 400, crowdpass.EMalformedBody},
		{"unknown field", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + event.Categories[1].ID.String() + `","quantity":1,"price":0}`), 400, crowdpass.EMalformedBody},
		{"field name in capitals", "POST", "/orders", std("k"), []byte(`{"EVENT_ID":"` + event.ID.String() + `","category_id":"` + event.Categories[1].ID.String() + `","quantity":1}`), 400, crowdpass.EMalformedBody},
		{"field sent twice", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + event.Categories[1].ID.String() + `","quantity":1,"quantity":2}`), 400, crowdpass.EMalformedBody},
		{"two objects", "POST", "/orders", std("k"), append(append([]byte{}, body...), body...), 400, crowdpass.EMalformedBody},
		{"quantity as string", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + event.Categories[1].ID.String() + `","quantity":"1"}`), 400, crowdpass.EMalformedBody},
		{"quantity fractional", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + event.Categories[1].ID.String() + `","quantity":1.5}`), 400, crowdpass.EMalformedBody},
		{"fields missing", "POST", "/orders", std("k"), []byte(`{}`), 422, crowdpass.EValidation},
		{"bad uuid", "POST", "/orders", std("k"), []byte(`{"event_id":"x","category_id":"y","quantity":1}`), 422, crowdpass.EValidation},
		{"quantity zero", "POST", "/orders", std("k"), orderJSON(event, 1, 0), 422, crowdpass.EValidation},
		{"quantity over the event's max", "POST", "/orders", std("k"), orderJSON(event, 1, 3), 422, crowdpass.EValidation},
		{"unknown event", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.Categories[0].ID.String() + `","category_id":"` + event.Categories[0].ID.String() + `","quantity":1}`), 404, crowdpass.ENotFound},
		{"category of another event", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + other.Categories[0].ID.String() + `","quantity":1}`), 404, crowdpass.ENotFound},
		{"over the max for an unknown category: validation first", "POST", "/orders", std("k"), []byte(`{"event_id":"` + event.ID.String() + `","category_id":"` + other.Categories[0].ID.String() + `","quantity":3}`), 422, crowdpass.EValidation},
		{"sale not open", "POST", "/orders", std("k-early"), orderJSON(notOpen, 0, 1), 409, crowdpass.ESaleNotOpen},
		{"sale closed", "POST", "/orders", std("k-late"), orderJSON(closed, 0, 1), 409, crowdpass.ESaleClosed},
		{"sold out", "POST", "/orders", std("k-sold"), orderJSON(event, 0, 1), 409, crowdpass.ESoldOut},
		{"unknown order", "GET", "/orders/" + event.ID.String(), hdr("Authorization", "Bearer "+good), nil, 404, crowdpass.ENotFound},
		{"order id not a uuid", "GET", "/orders/nope", hdr("Authorization", "Bearer "+good), nil, 404, crowdpass.ENotFound},
		{"unknown event page", "GET", "/events/" + event.Categories[0].ID.String(), nil, nil, 404, crowdpass.ENotFound},
		{"unknown route", "GET", "/nowhere", nil, nil, 404, crowdpass.ENotFound},
		{"event category key in capitals", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"X","categories":[{"NAME":"A","capacity":1}]}`), 400, crowdpass.EMalformedBody},
		{"event category key twice", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"X","categories":[{"name":"A","capacity":1,"capacity":2}]}`), 400, crowdpass.EMalformedBody},
		{"event category unknown key", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"X","categories":[{"name":"A","capacity":1,"seats":3}]}`), 400, crowdpass.EMalformedBody},
		{"NUL in an event name", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"a\u0000b","categories":[{"name":"A","capacity":1}]}`), 422, crowdpass.EValidation},
		{"NUL in a category name", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"X","categories":[{"name":"\u0000","capacity":1}]}`), 422, crowdpass.EValidation},
		{"bad event spec", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"","opens_at":"soon","categories":[]}`), 422, crowdpass.EValidation},
		{"blank names", "POST", "/events", hdr("Authorization", "Bearer "+admin, "Content-Type", "application/json"), []byte(`{"name":"  ","categories":[{"name":"\t","capacity":1}]}`), 422, crowdpass.EValidation},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, c.header, c.body)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, r.status, c.status, r.body)
			continue
		}
		if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q", c.name, ct)
		}
		p := r.problem(t)
		if p["code"] != string(c.code) || p["status"] != float64(c.status) || p["type"] == nil || p["title"] == nil || p["detail"] == nil {
			t.Errorf("%s: problem %s, want code %s", c.name, r.body, c.code)
		}
		if c.code == crowdpass.EValidation && p["errors"] == nil {
			t.Errorf("%s: validation problem without errors: %s", c.name, r.body)
		}
	}
	// HEAD is answered as GET, without the body.
	for _, path := range []string{"/healthz", "/readyz", "/events/" + event.ID.String()} {
		if r := h.do(http.MethodHead, path, nil, nil); r.status != http.StatusOK || len(r.body) != 0 {
			t.Errorf("HEAD %s: %d %q", path, r.status, r.body)
		}
	}
	// Nothing but the first order was accepted.
	if r := h.order("alice", "k-sold", orderJSON(event, 0, 1)); r.header.Get("Idempotent-Replayed") != "true" || r.status != 409 {
		t.Errorf("sold_out answer not replayed: %d %v", r.status, r.header)
	}
	for _, key := range []string{"k", "k-early", "k-late", "k-ct", "k-big"} {
		if r := h.order("alice", key, orderJSON(event, 1, 1)); r.status != http.StatusAccepted || r.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("key %q was stored by an error answer: %d %s", key, r.status, r.body)
		}
	}
}

func signed(t *testing.T, claims jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// One 422 lists every problem of an order, the quantity over the event's
// max_per_customer among them, in the fields' order.
func TestAValidationProblemListsEveryField(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(2, 10)
	r := h.order("alice", "k", []byte(`{"event_id":"`+event.ID.String()+`","category_id":"nope","quantity":3}`))
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422: %s", r.status, r.body)
	}
	var p struct {
		Code   string `json:"code"`
		Errors []struct {
			Field string `json:"field"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, e := range p.Errors {
		fields = append(fields, e.Field)
	}
	if p.Code != string(crowdpass.EValidation) || !slices.Equal(fields, []string{"category_id", "quantity"}) {
		t.Errorf("problem %s, want validation_failed listing category_id and quantity", r.body)
	}
}

// A body of the wrong shape is described in JSON's words, not Go's.
func TestAMalformedBodyIsDescribedInJSONsWords(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	admin, _ := h.authority.Issue("root", true, time.Hour)
	header := http.Header{"Authorization": {"Bearer " + admin}, "Content-Type": {"application/json"}}
	for body, want := range map[string]string{
		`{"name":"X","categories":"A"}`:                           `field "categories" must be an array`,
		`{"name":"X","categories":[{"name":"A","capacity":"1"}]}`: `field "categories.capacity" must be an integer`,
		`{"name":1,"categories":[]}`:                              `field "name" must be a string`,
	} {
		r := h.do(http.MethodPost, "/events", header, []byte(body))
		p := r.problem(t)
		if r.status != http.StatusBadRequest || p["code"] != string(crowdpass.EMalformedBody) {
			t.Errorf("%s: %d %s, want 400 malformed_body", body, r.status, r.body)
			continue
		}
		if detail, _ := p["detail"].(string); !strings.HasSuffix(detail, want) {
			t.Errorf("%s: detail %q, want it to end %q", body, detail, want)
		}
	}
}
