package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/internal/flatjson"
)

// MaxBody is the largest request body accepted.
const MaxBody = 16 << 10

// idempotencyKey reads the Idempotency-Key header.
func idempotencyKey(h http.Header) (string, error) {
	values := h.Values("Idempotency-Key")
	switch len(values) {
	case 0:
		return "", crowdpass.Errorf(crowdpass.EKeyMissing, "the Idempotency-Key header is required")
	case 1:
	default:
		return "", crowdpass.Errorf(crowdpass.EKeyInvalid, "the Idempotency-Key header was sent more than once")
	}
	key, err := crowdpass.ParseIdempotencyKey(values[0])
	if err != nil {
		return "", crowdpass.Errorf(crowdpass.EKeyInvalid, "the Idempotency-Key %s", err)
	}
	return key, nil
}

// readJSONBody checks the media type and size and returns the body.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	ct := r.Header["Content-Type"]
	if len(ct) != 1 || ct[0] != "application/json" { // the usual header, without parsing
		if len(ct) > 1 {
			return nil, crowdpass.Errorf(crowdpass.EUnsupportedMediaType, "the Content-Type header was sent more than once")
		}
		// A parameter ParseMediaType cannot read ("; charset") leaves the
		// media type itself good. JSON is UTF-8: another charset is not it.
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if (err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter)) || mt != "application/json" {
			return nil, crowdpass.Errorf(crowdpass.EUnsupportedMediaType, "the body must be application/json")
		}
		if errors.Is(err, mime.ErrInvalidMediaParameter) { // params is nil: read charset by hand
			params = map[string]string{}
			for _, p := range strings.Split(r.Header.Get("Content-Type"), ";")[1:] {
				if name, value, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(name, "charset") {
					params["charset"] = strings.Trim(value, `"`)
				}
			}
		}
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return nil, crowdpass.Errorf(crowdpass.EUnsupportedMediaType, "the body must be application/json in UTF-8")
		}
	}
	if r.ContentLength > MaxBody {
		return nil, crowdpass.Errorf(crowdpass.EPayloadTooLarge, "the body must be at most %d bytes", MaxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, crowdpass.Errorf(crowdpass.EPayloadTooLarge, "the body must be at most %d bytes", MaxBody)
	case err != nil:
		return nil, crowdpass.Errorf(crowdpass.EMalformedBody, "the body could not be read")
	}
	return body, nil
}

// decodeStrict decodes exactly one JSON object into v, rejecting unknown
// fields, wrong types and anything after the object.
func decodeStrict(body []byte, v any) error {
	if err := exactKeys(body, v); err != nil { // also: one object, not an array or a scalar
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the body is not of the documented shape: %s", jsonProblem(err))
	}
	if dec.More() {
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the body must be one JSON object and nothing after it")
	}
	if _, err := dec.Token(); err != io.EOF {
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the body must be one JSON object and nothing after it")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return "the body must be " + jsonKind(typeErr.Type)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type))
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	default:
		return err.Error()
	}
}

// jsonKind names what JSON value decodes into t, in the words of the
// documentation rather than Go's.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}

// exactKeys rejects keys, at any depth, that are not spelled exactly as v's
// json tags, and keys sent twice: encoding/json would accept "EVENT_ID" for
// "event_id" and keep the last of two values.
func exactKeys(body []byte, v any) error {
	return exactKeysOf(body, reflect.TypeOf(v), "")
}

// exactKeysOf checks body against t; path names body in messages. A value
// of the wrong kind is left for the decoder to describe.
func exactKeysOf(body []byte, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	shapeErr := func(err error) error {
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the body is not of the documented shape: %s", jsonProblem(err))
	}
	if k := t.Kind(); k != reflect.Slice && k != reflect.Struct {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t.Kind() == reflect.Slice {
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return nil
		}
		for i := 0; dec.More(); i++ {
			var elem json.RawMessage
			if err := dec.Decode(&elem); err != nil {
				return shapeErr(err)
			}
			if err := exactKeysOf(elem, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		fields[name] = t.Field(i).Type
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if path == "" {
			return crowdpass.Errorf(crowdpass.EMalformedBody, "the body must be one JSON object")
		}
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return shapeErr(err)
		}
		key, _ := tok.(string)
		name := key
		if path != "" {
			name = path + "." + key
		}
		ft, ok := fields[key]
		switch {
		case !ok:
			return crowdpass.Errorf(crowdpass.EMalformedBody, "unknown field %q", name)
		case seen[key]:
			return crowdpass.Errorf(crowdpass.EMalformedBody, "field %q sent twice", name)
		}
		seen[key] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return shapeErr(err)
		}
		if err := exactKeysOf(value, ft, name); err != nil {
			return err
		}
	}
	return nil
}

// decodeOrder decodes a POST /orders body. The plain shape every client
// sends (the three members, each once, plain strings and an integer) is
// scanned by hand; anything else goes through decodeStrict, which describes
// what is wrong. Both give the same orderBody for what the scan accepts.
func decodeOrder(body []byte) (orderBody, error) {
	if b, ok := scanOrder(body); ok {
		return b, nil
	}
	var b orderBody
	err := decodeStrict(body, &b)
	return b, err
}

// scanOrder accepts exactly: an object of distinct members event_id and
// category_id (plain strings) and quantity (an integer), in flatjson's
// plain forms. It reports false for anything else, valid JSON or not.
func scanOrder(s []byte) (b orderBody, ok bool) {
	ok = flatjson.Members(s, func(name string, v flatjson.Value) bool {
		switch {
		case name == "event_id" && v.Kind == flatjson.String && b.EventID == nil:
			b.EventID = &v.Str
		case name == "category_id" && v.Kind == flatjson.String && b.CategoryID == nil:
			b.CategoryID = &v.Str
		case name == "quantity" && v.Kind == flatjson.Int && b.Quantity == nil:
			b.Quantity = &v.Int
		default:
			return false
		}
		return true
	})
	return b, ok
}
