package rush

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// answer is what the generator keeps of one response.
type answer struct {
	status     int
	code       string // the problem's code, for 4xx and 5xx
	retryAfter time.Duration
	replayed   bool
}

// conn is one keep-alive HTTP/1.1 connection that sends POST /orders.
//
// The generator shares the machine with the system it measures, so it
// speaks just enough HTTP/1.1 by hand: net/http's client costs about as much
// CPU per request as the server's whole order path. One request is in flight
// per connection; every buyer goroutine owns its connections.
type conn struct {
	addr, host string
	path       string // the target's path prefix + "/orders"
	timeout    time.Duration
	nc         net.Conn
	br         *bufio.Reader
	req, body  []byte
}

func newConn(target string, timeout time.Duration) (*conn, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("rush: target %q is not an http:// URL", target)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &conn{addr: addr, host: u.Host, path: strings.TrimRight(u.Path, "/") + "/orders", timeout: timeout}, nil
}

func (c *conn) close() {
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
}

// maxBody bounds what the generator reads of one answer.
const maxBody = 1 << 20

// post sends one purchase and reads its answer, within the timeout and
// until ctx is done. Any transport error closes the connection. A kept-alive
// connection the server had closed meanwhile fails before any answer: the
// purchase is then sent once more on a new one, as net/http's client does
// (an Idempotency-Key makes the resend safe).
func (c *conn) post(ctx context.Context, token, key string, body []byte) (answer, error) {
	reused := c.nc != nil
	a, err := c.try(ctx, token, key, body)
	if err != nil && reused && ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		a, err = c.try(ctx, token, key, body)
	}
	return a, err
}

func (c *conn) try(ctx context.Context, token, key string, body []byte) (answer, error) {
	if c.nc == nil {
		nc, err := net.DialTimeout("tcp", c.addr, c.timeout)
		if err != nil {
			return answer{}, err
		}
		c.nc = nc
		if c.br == nil {
			c.br = bufio.NewReaderSize(nc, 4096)
		} else {
			c.br.Reset(nc)
		}
	}
	req := c.req[:0]
	req = append(req, "POST "...)
	req = append(req, c.path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, c.host...)
	if token != "" {
		req = append(req, "\r\nAuthorization: Bearer "...)
		req = append(req, token...)
	}
	req = append(req, "\r\nIdempotency-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	req = strconv.AppendInt(req, int64(len(body)), 10)
	req = append(req, "\r\n\r\n"...)
	req = append(req, body...)
	c.req = req

	_ = c.nc.SetDeadline(time.Now().Add(c.timeout))
	nc := c.nc
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.nc.Write(req); err != nil {
		c.close()
		return answer{}, err
	}
	a, keep, err := c.read()
	if err != nil || !keep {
		c.close()
	}
	return a, err
}

var errMalformed = errors.New("rush: malformed HTTP response")

// read parses one response: the status line, the headers the generator
// cares about, and a Content-Length or chunked body.
func (c *conn) read() (a answer, keep bool, err error) {
	line, err := c.line()
	if err != nil {
		return a, false, err
	}
	// "HTTP/1.1 202 Accepted"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return a, false, errMalformed
	}
	if a.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return a, false, errMalformed
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err := c.line()
		if err != nil {
			return a, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return a, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxBody {
				return a, false, errMalformed
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "Connection"):
			keep = keep && !asciiEqualFold(value, "close")
		case asciiEqualFold(name, "Retry-After"):
			if s, err := strconv.Atoi(string(value)); err == nil {
				a.retryAfter = time.Duration(s) * time.Second
			}
		case asciiEqualFold(name, "Idempotent-Replayed"):
			a.replayed = string(value) == "true"
		}
	}
	var body []byte
	switch {
	case chunked:
		body, err = c.chunked()
	case length >= 0:
		body = make([]byte, length)
		_, err = io.ReadFull(c.br, body)
	default:
		return a, false, errMalformed // the server always frames its answers
	}
	if err != nil {
		return a, false, err
	}
	if a.status >= 400 {
		a.code = problemCode(body)
	}
	return a, keep, nil
}

func (c *conn) line() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (c *conn) chunked() ([]byte, error) {
	var body []byte
	for {
		line, err := c.line()
		if err != nil {
			return nil, err
		}
		digits, _, _ := bytes.Cut(line, []byte(";")) // chunk extensions are ignored
		size, err := strconv.ParseUint(string(bytes.TrimSpace(digits)), 16, 32)
		if err != nil || len(body)+int(size) > maxBody {
			return nil, errMalformed
		}
		if size == 0 {
			for { // trailers
				line, err := c.line()
				if err != nil {
					return nil, err
				}
				if len(line) == 0 {
					return body, nil
				}
			}
		}
		chunk := make([]byte, size+2)
		if _, err := io.ReadFull(c.br, chunk); err != nil {
			return nil, err
		}
		body = append(body, chunk[:size]...)
	}
}

// problemCode finds the "code" member of a problem document without a full
// JSON decode: codes are plain snake_case words.
func problemCode(body []byte) string {
	_, rest, ok := bytes.Cut(body, []byte(`"code":"`))
	if !ok {
		return ""
	}
	code, _, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return ""
	}
	return string(code)
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
