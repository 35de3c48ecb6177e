package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/crowdpass/crowdpass"
)

// problem is an RFC 9457 problem document with the contract's code.
type problem struct {
	Type   string                 `json:"type"`
	Title  string                 `json:"title"`
	Status int                    `json:"status"`
	Detail string                 `json:"detail"`
	Code   crowdpass.ErrorCode    `json:"code"`
	Errors []crowdpass.FieldError `json:"errors,omitempty"`
}

// statusOf maps every problem code to its HTTP status; it is the one place
// that does.
func statusOf(code crowdpass.ErrorCode) int {
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
	crowdpass.EUnavailable:          "Service unavailable",
	crowdpass.EConflict:             "Conflict",
	crowdpass.EInternal:             "Internal error",
}

// problemOf turns an error into its problem document. Internal errors say
// nothing of their cause.
func problemOf(err error) problem {
	var e *crowdpass.Error
	if !errors.As(err, &e) {
		e = &crowdpass.Error{Code: crowdpass.EInternal, Message: "the server failed to handle the request"}
	}
	return problem{
		Type:   "urn:crowdpass:problem:" + string(e.Code),
		Title:  titles[e.Code],
		Status: statusOf(e.Code),
		Detail: e.Message,
		Code:   e.Code,
		Errors: e.Fields,
	}
}

// problemAnswer renders err as a stored answer.
func problemAnswer(err error) crowdpass.Answer {
	p := problemOf(err)
	body, _ := json.Marshal(p)
	return crowdpass.Answer{Status: p.Status, Body: append(body, '\n')}
}

// writeAnswer writes a status and body; problem statuses get the problem media type.
func writeAnswer(w http.ResponseWriter, a crowdpass.Answer) {
	if a.Status >= 400 {
		w.Header().Set("Content-Type", "application/problem+json")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.Status)
	w.Write(a.Body)
}

func writeError(w http.ResponseWriter, err error) {
	a := problemAnswer(err)
	if a.Status == http.StatusServiceUnavailable || crowdpass.Code(err) == crowdpass.ERequestInProgress {
		w.Header().Set("Retry-After", "1")
	}
	writeAnswer(w, a)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, err)
		return
	}
	writeAnswer(w, crowdpass.Answer{Status: status, Body: append(body, '\n')})
}
