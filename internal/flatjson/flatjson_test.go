package flatjson

import (
	"encoding/json"
	"reflect"
	"testing"
)

func collect(s string) (map[string]any, bool) {
	got := map[string]any{}
	ok := Members([]byte(s), func(name string, v Value) bool {
		switch v.Kind {
		case String:
			got[name] = v.Str
		case Int:
			got[name] = float64(v.Int)
		case Bool:
			got[name] = v.Bool
		}
		return true
	})
	return got, ok
}

func TestMembers(t *testing.T) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":"x","b":-12,"c":true,"d":false}`, "\t{\"a\" :\n\"x y\" , \"b\":0}\r\n",
	} {
		got, ok := collect(s)
		var want map[string]any
		if err := json.Unmarshal([]byte(s), &want); err != nil || !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, %v; encoding/json %v, %v", s, got, ok, want, err)
		}
	}
	for _, s := range []string{
		``, `[]`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":1} {}`, `{"a":01}`, `{"a":1.5}`,
		`{"a":1e3}`, `{"a":-}`, `{"a":null}`, `{"a":[1]}`, `{"a":{}}`, `{"a":"\u0041"}`, `{"a":"é"}`,
		`{"a":1234567890123456}`, `{"a\n":1}`, `{"a":tru}`,
	} {
		if got, ok := collect(s); ok {
			t.Errorf("%q accepted as %v", s, got)
		}
	}
}

func TestMembersStopsWhereTheCallerRefuses(t *testing.T) {
	calls := 0
	ok := Members([]byte(`{"a":1,"b":2,"c":3}`), func(name string, _ Value) bool {
		calls++
		return name != "b"
	})
	if ok || calls != 2 {
		t.Errorf("ok %v after %d calls, want false after 2", ok, calls)
	}
}
