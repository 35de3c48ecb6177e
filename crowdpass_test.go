package crowdpass_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
)

func FuzzParseIdempotencyKey(f *testing.F) {
	for _, seed := range []string{"abc", `"abc"`, `"a\"b"`, `"a\\b"`, `"a\b"`, `""`, "", " ", "a b", "clé", strings.Repeat("k", 255), strings.Repeat("k", 256), `"`, `"""`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := crowdpass.ParseIdempotencyKey(v)
		if err != nil {
			return
		}
		if len(key) == 0 || len(key) > crowdpass.MaxKeyLen {
			t.Fatalf("%q parsed to a key of %d bytes", v, len(key))
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x21 || key[i] > 0x7e {
				t.Fatalf("%q parsed to %q, which is not visible ASCII", v, key)
			}
		}
		// The quoted form of a key names the same key.
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
		if again, err := crowdpass.ParseIdempotencyKey(quoted); err == nil && again != key {
			t.Fatalf("%q and %q name different keys", key, quoted)
		}
	})
}

// Order ids and fingerprints are stored (orders, Redis records): a build
// that derived them differently would see every earlier key as new.
func TestOrderIDsAndFingerprintsNeverChange(t *testing.T) {
	t.Parallel()
	if got := crowdpass.OrderID("alice", "k").String(); got != "bbd603f0-6a88-8379-ae7b-1902ec74a7d5" {
		t.Errorf("OrderID(alice, k) = %s", got)
	}
	for i := range 200 {
		customer, key := fmt.Sprintf("c%d\x00é", i), fmt.Sprintf("key-%d", i*7919)
		want := uuid.NewHash(sha256.New(), uuid.MustParse("6f1c4d3e-2b7a-4f0e-9c55-0a7d3e1b9c42"), fmt.Appendf(nil, "%d:%s:%s", len(customer), customer, key), 8)
		if got := crowdpass.OrderID(customer, key); got != want {
			t.Fatalf("OrderID(%q, %q) = %s, was %s", customer, key, got, want)
		}
		p := crowdpass.OrderPayload{EventID: uuid.New(), CategoryID: uuid.New(), Quantity: i%4 + 1}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%d", p.EventID, p.CategoryID, p.Quantity))
		if got, was := p.Fingerprint(), hex.EncodeToString(sum[:16]); got != was {
			t.Fatalf("fingerprint of %+v = %s, was %s", p, got, was)
		}
	}
}

func TestOrderIDIsDeterministicAndScopedPerCustomer(t *testing.T) {
	t.Parallel()
	a := crowdpass.OrderID("alice", "k")
	if a != crowdpass.OrderID("alice", "k") {
		t.Error("the same customer and key gave two ids")
	}
	for _, other := range [][2]string{{"bob", "k"}, {"alice", "k2"}, {"alic", "ek"}, {"alice:", "k"}} {
		if crowdpass.OrderID(other[0], other[1]) == a {
			t.Errorf("%q/%q collides with alice/k", other[0], other[1])
		}
	}
}

func TestParseTimeTakesRFC3339AndOnlyIt(t *testing.T) {
	for in, want := range map[string]string{
		"2030-01-01T00:00:00Z":              "2030-01-01T00:00:00.000000Z",
		"2030-01-01t00:00:00z":              "2030-01-01T00:00:00.000000Z", // RFC 3339, 5.6: either case
		"2030-01-01T01:30:00.1234567+01:30": "2030-01-01T00:00:00.123456Z",
		"2030-01-01T00:00:00-23:59":         "2030-01-01T23:59:00.000000Z",
	} {
		got, err := crowdpass.ParseTime(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTime(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{
		"2030-01-01T00:00:00+24:00", "2030-01-01T00:00:00-24:30", "2030-01-01T00:00:00+01:60", "2030-01-01T00:00:00-00:60",
		"2030-01-01T00:00:00,5Z", "2030-01-01 00:00:00Z", "2030-01-01", "tomorrow",
	} {
		if got, err := crowdpass.ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseIDTakesTheCanonicalFormOnly(t *testing.T) {
	t.Parallel()
	const id = "01a2266c-6f11-7120-9013-2b46e193185b"
	for _, s := range []string{id, strings.ToUpper(id)} {
		if got, err := crowdpass.ParseID(s); err != nil || got.String() != id {
			t.Errorf("ParseID(%q) = %v, %v; want %s", s, got, err, id)
		}
	}
	for _, s := range []string{"", "{" + id + "}", "urn:uuid:" + id, strings.ReplaceAll(id, "-", ""), id[:35] + "g", " " + id[1:]} {
		if got, err := crowdpass.ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %v, want an error", s, got)
		}
	}
}
