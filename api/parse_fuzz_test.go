package api

import (
	"testing"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

// FuzzOrderBody feeds arbitrary bodies to the parsing of POST /orders: it
// never panics, and every rejection is a 400 or a 422, never a 5xx.
func FuzzOrderBody(f *testing.F) {
	for _, seed := range []string{
		`{"event_id":"01a2224f-c7ca-7241-b1a7-a1e0845906f4","category_id":"01a2224f-c7ce-7a62-99c8-bec26c7e27f6","quantity":1}`,
		`{}`, `[]`, `null`, `{"quantity":1e400}`, `{"quantity":-1}`, `{"event_id":1}`, `{"a":1}`, `{} {}`, `{`, "", `"x"`,
		`{"event_id":"{01a2224f-c7ca-7241-b1a7-a1e0845906f4}","category_id":"urn:uuid:01a2224f-c7ce-7a62-99c8-bec26c7e27f6","quantity":2}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b orderBody
		err := decodeStrict(body, &b)
		if err == nil {
			var p crowdpass.OrderPayload
			p, err = b.validate(nil)
			if err == nil && (p.Quantity < 1 || p.EventID.String() == "00000000-0000-0000-0000-000000000000" && b.EventID == nil) {
				t.Fatalf("accepted %q as %+v", body, p)
			}
		}
		if err != nil {
			if s := problem.Status(crowdpass.Code(err)); s != 400 && s != 422 {
				t.Fatalf("%q rejected with status %d: %v", body, s, err)
			}
		}
	})
}

// FuzzScanOrder checks the hand-written scan of the usual body against the
// strict decoder: whatever the scan accepts, the decoder accepts with the
// same values.
func FuzzScanOrder(f *testing.F) {
	for _, seed := range []string{
		`{"event_id":"01a2224f-c7ca-7241-b1a7-a1e0845906f4","category_id":"01a2224f-c7ce-7a62-99c8-bec26c7e27f6","quantity":1}`,
		` { "quantity" : 4 , "event_id":"x" } `, `{}`, `{"quantity":01}`, `{"quantity":1.0}`, `{"quantity":-0}`,
		`{"quantity":1,"quantity":2}`, `{"event_id":"a\"b"}`, `{"Event_ID":"x"}`, `{"event_id":"x",}`, `{"quantity":1}x`,
		`{"quantity":99999999999999999999}`, "{\"event_id\":\"\u00e9\"}", `{"event_id":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := scanOrder(body)
		if !ok {
			return
		}
		var strict orderBody
		if err := decodeStrict(body, &strict); err != nil {
			t.Fatalf("scan accepted %q, the decoder did not: %v", body, err)
		}
		same := func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
		if !same(fast.EventID, strict.EventID) || !same(fast.CategoryID, strict.CategoryID) ||
			(fast.Quantity == nil) != (strict.Quantity == nil) || (fast.Quantity != nil && *fast.Quantity != *strict.Quantity) {
			t.Fatalf("%q: scan %+v, decoder %+v", body, fast, strict)
		}
	})
}
