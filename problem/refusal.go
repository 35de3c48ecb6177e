package problem

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/crowdpass/crowdpass"
)

// Listener returns ln with connections that answer, as a problem document,
// the requests net/http refuses before any handler sees them: a header
// value with a control character (an Idempotency-Key of "a\x01b", say), a
// malformed request line or header, a transfer coding it does not know
// (a 501 for bad input), headers over the limit. net/http writes those in
// plain text, straight to the connection, and closes it; here that write
// is replaced by the problem the contract's order of checks gives, as far
// as the request's bytes tell it: auth first where the route needs it
// (verified with authorized; nil takes any bearer token for good), then the
// Idempotency-Key of POST /orders, then malformed_body.
func Listener(ln net.Listener, authorized func(token string) bool) net.Listener {
	return &refusingListener{Listener: ln, authorized: authorized}
}

type refusingListener struct {
	net.Listener
	authorized func(token string) bool
}

func (l *refusingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusingConn{Conn: c, authorized: l.authorized}, nil
}

// refusingConn remembers the bytes of the request net/http refuses, and
// rewrites net/http's refusal. A request is usually read whole: its last
// read is kept as a window on the server's buffer, without a copy. A head
// that comes in pieces (sent so, or over the server's 4 KiB buffer, which
// moves what is left to its front before it reads again) is copied until
// it ends, up to maxHead. net/http reads the first byte of the next request
// alone, while a handler runs (to notice a client gone): that byte is kept
// apart, and goes before the read that follows it. Nothing is kept once
// the connection is a WebSocket.
type refusingConn struct {
	net.Conn
	authorized func(token string) bool
	last       []byte // the request as far as read: a window, or head
	head       []byte // a head in pieces, copied
	piecing    bool   // head does not end yet
	lead       byte   // the byte read alone before last, if led
	led        bool
	leading    bool // the last read was of that one byte
	upgraded   bool // a 101 was written: frames follow, not requests
}

// maxHead bounds the copy of a head in pieces: net/http refuses more.
const maxHead = 68 << 10

func (c *refusingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	switch {
	case n == 0 || c.upgraded:
	case n == 1 && len(p) == 1:
		c.lead, c.leading, c.last, c.piecing = p[0], true, nil, false
	case c.piecing:
		c.head = append(c.head, p[:min(n, max(maxHead-len(c.head), 0))]...)
		c.last = c.head
		if headEnds(c.head) {
			c.piecing, c.head = false, nil // last keeps the copy
		}
	default:
		c.last, c.led, c.leading = p[:n], c.leading, false
		if !headEnds(c.last) {
			c.head = append(make([]byte, 0, 2*n), c.last...)
			c.last, c.piecing = c.head, true
		}
	}
	return n, err
}

// headEnds reports whether b holds a blank line, where a request's head
// ends (lines may end in LF alone).
func headEnds(b []byte) bool {
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// request is what was read of the request net/http refused.
func (c *refusingConn) request() []byte {
	if !c.led {
		return c.last
	}
	return append([]byte{c.lead}, c.last...)
}

// refusalHeaders follow the status line of net/http's refusals, and of no
// response a handler writes: those list Connection before Content-Type, or
// carry a Date.
const refusalHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *refusingConn) Write(p []byte) (int, error) {
	if len(p) > 12 && string(p[:13]) == "HTTP/1.1 101 " {
		c.upgraded, c.last, c.head, c.piecing = true, nil, nil, false
	}
	if !c.upgraded && len(p) > 12 && string(p[:9]) == "HTTP/1.1 " && (p[9] == '4' || p[9] == '5') {
		i := bytes.IndexByte(p, '\r')
		// net/http answers an Expect other than 100-continue with an empty
		// 417 of its own, and no handler here ever writes a 417.
		if i > 0 && (bytes.HasPrefix(p[i:], []byte(refusalHeaders)) || string(p[9:13]) == "417 ") {
			reason := ""
			if bytes.HasPrefix(p[i:], []byte(refusalHeaders)) {
				reason = string(p[i+len(refusalHeaders):])
			}
			if _, err := c.Conn.Write(refusal(string(p[9:12]), reason, c.request(), c.authorized)); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// NetConn returns the connection c wraps, as tls.Conn's does: what sizes
// a socket's buffers or reads its queue (notifier.ConnContext) needs the
// TCP connection itself.
func (c *refusingConn) NetConn() net.Conn { return c.Conn }

// CloseWrite keeps the half-close net/http does after a refusal.
func (c *refusingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// refusal is the whole response for a request net/http refused with
// status, for reason, from what raw (the request's bytes, as far as they
// were read) tells.
func refusal(status, reason string, raw []byte, authorized func(string) bool) []byte {
	err := refusalError(status, reason, raw, authorized)
	p := Of(err)
	body, _ := json.Marshal(p)
	body = append(body, '\n')
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(p.Status) + " " + http.StatusText(p.Status) + "\r\n")
	b.WriteString("Content-Type: application/problem+json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}

func refusalError(status, reason string, raw []byte, authorized func(string) bool) error {
	method, target, headers, ok := readHead(raw)
	path, query, _ := strings.Cut(target, "?")
	if ok && needsAuth(method, path) {
		if err := checkAuth(headers, query, authorized); err != nil {
			return err
		}
	}
	if ok && method == "POST" && path == "/orders" {
		switch keys := headers["idempotency-key"]; len(keys) {
		case 0:
			return crowdpass.Errorf(crowdpass.EKeyMissing, "the Idempotency-Key header is required")
		case 1:
			if _, err := crowdpass.ParseIdempotencyKey(keys[0]); err != nil {
				return crowdpass.Errorf(crowdpass.EKeyInvalid, "the Idempotency-Key %s", err)
			}
		default:
			return crowdpass.Errorf(crowdpass.EKeyInvalid, "the Idempotency-Key header was sent more than once")
		}
	}
	switch status {
	case "431":
		return crowdpass.Errorf(crowdpass.EPayloadTooLarge, "the request's headers are over the limit")
	case "501":
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the body's transfer coding is not supported")
	case "417":
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the Expect header asks for what this server does not do (only 100-continue)")
	}
	if _, text, found := strings.Cut(reason, ": "); found && text != "" {
		return crowdpass.Errorf(crowdpass.EMalformedBody, "the request could not be read: %s", text)
	}
	return crowdpass.Errorf(crowdpass.EMalformedBody, "the request could not be read: a header or the request line is malformed (a control character in a header's value, say)")
}

// needsAuth reports whether a route answers 401 before anything else.
func needsAuth(method, path string) bool {
	return path == "/orders" || strings.HasPrefix(path, "/orders/") || path == "/ws" || (method == "POST" && path == "/events")
}

func checkAuth(headers map[string][]string, query string, authorized func(string) bool) error {
	var token string
	switch h := headers["authorization"]; len(h) {
	case 0:
		q, _ := url.ParseQuery(query)
		token = q.Get("access_token")
	case 1:
		scheme, tok, ok := strings.Cut(h[0], " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(tok)
		}
	}
	if token == "" || !validHeaderValue(token) || (authorized != nil && !authorized(token)) {
		return crowdpass.Errorf(crowdpass.EUnauthorized, "a valid bearer token is required")
	}
	return nil
}

// requestLine finds request lines; the last in what was read is the one
// net/http refused (requests before it on the connection were answered).
var requestLine = regexp.MustCompile(`[A-Z]{3,7} [^ \r\n]+ HTTP/1\.[01]\r?\n`)

// readHead reads the request line and headers of the last request in raw,
// as far as they go: names in lower case, values trimmed as net/http trims
// them.
func readHead(raw []byte) (method, target string, headers map[string][]string, ok bool) {
	if all := requestLine.FindAllIndex(raw, -1); len(all) > 0 {
		raw = raw[all[len(all)-1][0]:]
	}
	// Lines may end in LF alone, as net/http allows.
	text := strings.ReplaceAll(string(raw), "\r\n", "\n")
	head, _, _ := strings.Cut(text, "\n\n")
	lines := strings.Split(head, "\n")
	fields := strings.Fields(lines[0])
	if len(fields) != 3 || !strings.HasPrefix(fields[2], "HTTP/") {
		return "", "", nil, false
	}
	headers = map[string][]string{}
	for _, line := range lines[1:] {
		name, value, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		name = strings.ToLower(name)
		headers[name] = append(headers[name], strings.Trim(value, " \t"))
	}
	target = fields[1]
	if u, err := url.Parse(target); err == nil && u.IsAbs() { // absolute form
		target = u.RequestURI()
	}
	return fields[0], target, headers, true
}

func validHeaderValue(v string) bool {
	for i := range len(v) {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
