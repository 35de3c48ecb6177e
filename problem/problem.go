// Package problem writes errors as RFC 9457 problem documents carrying the
// contract's codes; it is the one place that maps codes to HTTP statuses.
package problem

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/crowdpass/crowdpass"
)

// Problem is an RFC 9457 problem document with the contract's code.
type Problem struct {
	Type   string                 `json:"type"`
	Title  string                 `json:"title"`
	Status int                    `json:"status"`
	Detail string                 `json:"detail"`
	Code   crowdpass.ErrorCode    `json:"code"`
	Errors []crowdpass.FieldError `json:"errors,omitempty"`
}

// Status maps every problem code to its HTTP status; it is the one place
// that does.
func Status(code crowdpass.ErrorCode) int {
	switch code {
	case crowdpass.EUnauthorized:
		return http.StatusUnauthorized
	case crowdpass.EForbidden:
		return http.StatusForbidden
	case crowdpass.EKeyMissing, crowdpass.EKeyInvalid, crowdpass.EMalformedBody:
		return http.StatusBadRequest
	case crowdpass.EUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case crowdpass.EPayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case crowdpass.EValidation, crowdpass.EKeyMismatch:
		return http.StatusUnprocessableEntity
	case crowdpass.ERequestInProgress, crowdpass.ESoldOut, crowdpass.ELimitExceeded,
		crowdpass.ESaleNotOpen, crowdpass.ESaleClosed, crowdpass.EConflict:
		return http.StatusConflict
	case crowdpass.ENotFound:
		return http.StatusNotFound
	case crowdpass.EMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case crowdpass.EUpgradeRequired:
		return http.StatusUpgradeRequired
	case crowdpass.EUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

var titles = map[crowdpass.ErrorCode]string{
	crowdpass.EUnauthorized:         "Unauthorized",
	crowdpass.EForbidden:            "Forbidden",
	crowdpass.EKeyMissing:           "Idempotency-Key missing",
	crowdpass.EKeyInvalid:           "Idempotency-Key invalid",
	crowdpass.EMalformedBody:        "Malformed body",
	crowdpass.EUnsupportedMediaType: "Unsupported media type",
	crowdpass.EPayloadTooLarge:      "Payload too large",
	crowdpass.EValidation:           "Validation failed",
	crowdpass.EKeyMismatch:          "Idempotency-Key reused with another payload",
	crowdpass.ERequestInProgress:    "Request in progress",
	crowdpass.ESoldOut:              "Sold out",
	crowdpass.ELimitExceeded:        "Limit exceeded",
	crowdpass.ESaleNotOpen:          "Sale not open",
	crowdpass.ESaleClosed:           "Sale closed",
	crowdpass.ENotFound:             "Not found",
	crowdpass.EMethodNotAllowed:     "Method not allowed",
	crowdpass.EUpgradeRequired:      "WebSocket handshake required",
	crowdpass.EUnavailable:          "Service unavailable",
	crowdpass.EConflict:             "Conflict",
	crowdpass.EInternal:             "Internal error",
}

// Of turns an error into its problem document. Internal errors say
// nothing of their cause.
func Of(err error) Problem {
	var e *crowdpass.Error
	if !errors.As(err, &e) {
		e = &crowdpass.Error{Code: crowdpass.EInternal, Message: "the server failed to handle the request"}
	}
	return Problem{
		Type:   "urn:crowdpass:problem:" + string(e.Code),
		Title:  titles[e.Code],
		Status: Status(e.Code),
		Detail: e.Message,
		Code:   e.Code,
		Errors: e.Fields,
	}
}

// Answer renders err as a stored answer.
func Answer(err error) crowdpass.Answer {
	p := Of(err)
	body, _ := json.Marshal(p)
	return crowdpass.Answer{Status: p.Status, Body: append(body, '\n')}
}

// Header values set on every answer, shared: assigned to a response's
// header map directly, they spare Set's canonicalisation and a slice per
// response on the hot path. Nothing appends to them in place (their
// capacity is their length), so a later Add copies.
var (
	problemJSON = []string{"application/problem+json"}
	plainJSON   = []string{"application/json"}
	retryAfter  = []string{"1"}
)

// WriteAnswer writes a status and body; problem statuses get the problem media type.
func WriteAnswer(w http.ResponseWriter, a crowdpass.Answer) {
	if a.Status >= 400 {
		w.Header()["Content-Type"] = problemJSON
	} else {
		w.Header()["Content-Type"] = plainJSON
	}
	w.WriteHeader(a.Status)
	w.Write(a.Body)
}

// WriteError writes err as a problem; 503 and request_in_progress get Retry-After.
func WriteError(w http.ResponseWriter, err error) {
	a := Answer(err)
	if a.Status == http.StatusServiceUnavailable || crowdpass.Code(err) == crowdpass.ERequestInProgress {
		w.Header()["Retry-After"] = retryAfter
	}
	WriteAnswer(w, a)
}

// WriteJSON writes v as a JSON document with status: application/json
// whatever the status (a /readyz saying down is a 503 with its own shape,
// not a problem).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteError(w, err)
		return
	}
	w.Header()["Content-Type"] = plainJSON
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
