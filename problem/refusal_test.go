package problem_test

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

// A request net/http refuses before any handler is answered with the
// problem the contract's order of checks gives, not net/http's plain text:
// auth first, then the Idempotency-Key, then malformed_body; never a 5xx.
func TestRequestsNetHTTPRefusesGetProblems(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the handler's own", http.StatusBadRequest)
	}))
	srv.Config.MaxHeaderBytes = 4 << 10
	srv.Listener = problem.Listener(srv.Listener, func(token string) bool { return token == "good" })
	srv.Start()
	t.Cleanup(srv.Close)

	const order = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
	for _, c := range []struct {
		name    string
		request string
		status  int
		code    crowdpass.ErrorCode
	}{
		{"a control character in the key", order + "Authorization: Bearer good\r\nIdempotency-Key: a\x01b\r\n\r\n{}", 400, crowdpass.EKeyInvalid},
		{"DEL in the key", order + "Authorization: Bearer good\r\nIdempotency-Key: a\x7fb\r\n\r\n{}", 400, crowdpass.EKeyInvalid},
		{"no token before a bad key", order + "Idempotency-Key: a\x01b\r\n\r\n{}", 401, crowdpass.EUnauthorized},
		{"a bad token before a bad key", order + "Authorization: Bearer bad\r\nIdempotency-Key: a\x01b\r\n\r\n{}", 401, crowdpass.EUnauthorized},
		{"a control character in the token", order + "Authorization: Bearer go\x01od\r\nIdempotency-Key: k\r\n\r\n{}", 401, crowdpass.EUnauthorized},
		{"no key beside a bad header", order + "Authorization: Bearer good\r\nX-Note: a\x01b\r\n\r\n{}", 400, crowdpass.EKeyMissing},
		{"a bad header elsewhere", order + "Authorization: Bearer good\r\nIdempotency-Key: k\r\nX-Note: a\x01b\r\n\r\n{}", 400, crowdpass.EMalformedBody},
		{"an unknown transfer coding", "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer good\r\nIdempotency-Key: k\r\nTransfer-Encoding: gzip\r\n\r\n{}", 400, crowdpass.EMalformedBody},
		{"lines ending in LF alone", "POST /orders HTTP/1.1\nHost: x\nContent-Length: 2\nIdempotency-Key: a\x01b\n\n{}", 401, crowdpass.EUnauthorized},
		{"an absolute target", "POST http://x/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nIdempotency-Key: a\x01b\r\n\r\n{}", 401, crowdpass.EUnauthorized},
		{"a public route", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: \x7f\r\n\r\n", 400, crowdpass.EMalformedBody},
		{"a WebSocket's token in its query", "GET /ws?access_token=bad HTTP/1.1\r\nHost: x\r\nX-Note: \x01\r\n\r\n", 401, crowdpass.EUnauthorized},
		{"a bad Content-Length", "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, crowdpass.EMalformedBody},
		{"an unknown expectation", "GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n", 400, crowdpass.EMalformedBody},
		{"a head over the server's buffer, without a token", "POST /orders HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("x", 5000) + "\r\nIdempotency-Key: a\x01b\r\n\r\n", 401, crowdpass.EUnauthorized},
		{"headers over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: " + strings.Repeat("x", 8<<10) + "\r\n\r\n", 413, crowdpass.EPayloadTooLarge},
	} {
		resp := rawRequest(t, srv.Listener.Addr().String(), c.request)
		var p problem.Problem
		err := json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" || err != nil ||
			p.Code != c.code || p.Status != c.status || p.Type == "" || p.Title == "" || p.Detail == "" {
			t.Errorf("%s: %d %q %+v (%v); want %d %s", c.name, resp.StatusCode, resp.Header.Get("Content-Type"), p, err, c.status, c.code)
		}
	}

	// A request refused after another answered on the same connection,
	// both sent at once.
	addr := srv.Listener.Addr().String()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + order + "Authorization: Bearer good\r\nIdempotency-Key: a\x01b\r\n\r\n{}")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, want := range []int{http.StatusBadRequest, http.StatusBadRequest} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var p problem.Problem
		json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != want || (i == 1 && p.Code != crowdpass.EKeyInvalid) {
			t.Errorf("pipelined request %d: %d %+v; want %d (the second idempotency_key_invalid)", i, resp.StatusCode, p, want)
		}
	}

	// What a handler writes passes untouched, whatever it is.
	resp := rawRequest(t, srv.Listener.Addr().String(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("the handler's answer: %d %q, want its own 400 in plain text", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func rawRequest(t *testing.T, addr, request string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
