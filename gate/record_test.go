package gate

import (
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []record{
		{fp: "ab12", owner: "o1", customer: "alice"},
		{status: 202, fp: "ab12", customer: "a\nb|c\n", body: []byte("{\"x\":1}\n")},
		{status: 409, fp: "", customer: "", body: nil},
		{status: 409, fp: "f", customer: strings.Repeat("é", 127), body: []byte("\n\n")},
	} {
		got, ok := decodeRecord(r.encode())
		if !ok || got.status != r.status || got.fp != r.fp || got.owner != r.owner || got.customer != r.customer || string(got.body) != string(r.body) {
			t.Errorf("round trip of %+v = %+v, %v", r, got, ok)
		}
	}
	for _, bad := range []string{"", "202", "202\nfp\nowner\n", "x\nfp\n\n0\n", "0\nfp\n\n9\nabc", "0\nfp\n\n-1\n"} {
		if _, ok := decodeRecord(bad); ok {
			t.Errorf("decodeRecord(%q) accepted", bad)
		}
	}
}
