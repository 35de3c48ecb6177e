// Package flatjson reads the flat JSON objects of the hot paths (an order's
// body, a token's claims) without reflection. It accepts only the plain
// forms every client writes: members whose values are strings of printable
// ASCII without escapes, integers without fraction or exponent, or true and
// false. For anything else it reports false, and the caller decodes with
// encoding/json, which alone says what is wrong.
package flatjson

import "strconv"

// Kind is the type of a member's value.
type Kind int

const (
	String Kind = iota + 1
	Int
	Bool
)

// Value is one member's value.
type Value struct {
	Kind Kind
	Str  string
	Int  int64
	Bool bool
}

// maxDigits keeps integers exact as float64 too (2^53 has 16 digits), as
// JSON decoders that read numbers as floats see them.
const maxDigits = 15

// Members calls member for each member of the object s, in order, and
// reports whether s is one such object, surrounded by whitespace only, and
// member accepted every member. Names are plain strings too.
func Members(s []byte, member func(name string, v Value) bool) bool {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return skipSpace(s, i+1) == len(s)
	}
	for {
		name, next, ok := plainString(s, i)
		if !ok {
			return false
		}
		i = skipSpace(s, next)
		if i >= len(s) || s[i] != ':' {
			return false
		}
		var v Value
		if v, i, ok = value(s, skipSpace(s, i+1)); !ok || !member(name, v) {
			return false
		}
		i = skipSpace(s, i)
		if i >= len(s) {
			return false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return skipSpace(s, i+1) == len(s)
		default:
			return false
		}
	}
}

func value(s []byte, i int) (Value, int, bool) {
	switch {
	case i >= len(s):
		return Value{}, i, false
	case s[i] == '"':
		str, next, ok := plainString(s, i)
		return Value{Kind: String, Str: str}, next, ok
	case hasPrefix(s[i:], "true"):
		return Value{Kind: Bool, Bool: true}, i + 4, true
	case hasPrefix(s[i:], "false"):
		return Value{Kind: Bool}, i + 5, true
	}
	n, next, ok := integer(s, i)
	return Value{Kind: Int, Int: n}, next, ok
}

func hasPrefix(s []byte, p string) bool { return len(s) >= len(p) && string(s[:len(p)]) == p }

func skipSpace(s []byte, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a string at s[i] of printable ASCII other than the
// quote and the backslash.
func plainString(s []byte, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return string(s[i+1 : j]), j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", i, false
		}
	}
	return "", i, false
}

// integer reads an integer at s[i]: no fraction, no exponent, no leading
// zero, at most maxDigits digits.
func integer(s []byte, i int) (int64, int, bool) {
	j := i
	if j < len(s) && s[j] == '-' {
		j++
	}
	start := j
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	digits := j - start
	if digits == 0 || digits > maxDigits || (digits > 1 && s[start] == '0') ||
		(j < len(s) && (s[j] == '.' || s[j] == 'e' || s[j] == 'E')) {
		return 0, i, false
	}
	n, err := strconv.ParseInt(string(s[i:j]), 10, 64)
	return n, j, err == nil
}
