package crowdpass_test

import (
	"strings"
	"testing"

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
