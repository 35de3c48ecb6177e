package crowdpass

import (
	"errors"
	"fmt"
)

// ErrorCode is a stable, machine-readable problem code of the contract.
type ErrorCode string

// The contract's problem codes.
const (
	EUnauthorized         ErrorCode = "unauthorized"
	EForbidden            ErrorCode = "forbidden"
	EKeyMissing           ErrorCode = "idempotency_key_missing"
	EKeyInvalid           ErrorCode = "idempotency_key_invalid"
	EMalformedBody        ErrorCode = "malformed_body"
	EUnsupportedMediaType ErrorCode = "unsupported_media_type"
	EPayloadTooLarge      ErrorCode = "payload_too_large"
	EValidation           ErrorCode = "validation_failed"
	EKeyMismatch          ErrorCode = "idempotency_key_mismatch"
	ERequestInProgress    ErrorCode = "request_in_progress"
	ESoldOut              ErrorCode = "sold_out"
	ELimitExceeded        ErrorCode = "limit_exceeded"
	ESaleNotOpen          ErrorCode = "sale_not_open"
	ESaleClosed           ErrorCode = "sale_closed"
	ENotFound             ErrorCode = "not_found"
	EUnavailable          ErrorCode = "unavailable"
	EInternal             ErrorCode = "internal"
	EConflict             ErrorCode = "conflict"
	EMethodNotAllowed     ErrorCode = "method_not_allowed"
	EUpgradeRequired      ErrorCode = "upgrade_required"
)

// FieldError names one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a domain error with a contract code. Errors that are not an *Error
// are internal.
type Error struct {
	Code    ErrorCode
	Message string
	Fields  []FieldError
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Fields)
}

// Errorf returns an *Error with the given code.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Code returns the code of err, EInternal for an error without one and ""
// for nil.
func Code(err error) ErrorCode {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EInternal
	}
}

// ErrNotFound is returned when a looked-up thing does not exist.
var ErrNotFound = &Error{Code: ENotFound, Message: "not found"}

// ErrUnconfirmed is wrapped by a publish that left the process but whose
// confirm did not come in time: the broker may have queued the message.
var ErrUnconfirmed = errors.New("the broker did not confirm the message in time; it may be queued")

type validator struct{ fields []FieldError }

func (v *validator) add(field, message string) {
	v.fields = append(v.fields, FieldError{Field: field, Message: message})
}

func (v *validator) err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return &Error{Code: EValidation, Message: "the request has invalid fields", Fields: v.fields}
}
