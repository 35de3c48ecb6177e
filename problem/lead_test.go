package problem

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// net/http reads the next request's first byte alone while a handler runs;
// a refusal of that request is judged on all of it, that byte included.
func TestARefusalSeesTheByteReadAheadOfItsRequest(t *testing.T) {
	t.Parallel()
	server, client := net.Pipe()
	defer client.Close()
	c := &refusingConn{Conn: server, authorized: func(tok string) bool { return tok == "good" }}
	request := "POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nIdempotency-Key: a\x01b\r\n\r\n"
	go func() { client.Write([]byte(request)) }()
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, 4096)
	n, err := c.Read(rest)
	if err != nil || n != len(request)-1 {
		t.Fatalf("read %d, %v", n, err)
	}
	if answer := refuse(t, c, client); !bytes.Contains(answer, []byte(`"code":"idempotency_key_invalid"`)) {
		t.Errorf("refusal %q, want idempotency_key_invalid", answer)
	}
}

// A head that comes in pieces is judged whole, although the server reads
// each piece into the front of its buffer, over the last.
func TestARefusalSeesAHeadReadInPieces(t *testing.T) {
	t.Parallel()
	server, client := net.Pipe()
	defer client.Close()
	c := &refusingConn{Conn: server, authorized: func(tok string) bool { return tok == "good" }}
	line, rest := "POST /orders HTTP/1.1\r\n", "Host: x\r\nAuthorization: Bearer good\r\nIdempotency-Key: a\x01b\r\n\r\n"
	go func() {
		client.Write([]byte(line))
		client.Write([]byte(rest))
	}()
	buf := make([]byte, 4096)
	for _, want := range []string{line, rest} {
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
	if answer := refuse(t, c, client); !bytes.Contains(answer, []byte(`"code":"idempotency_key_invalid"`)) {
		t.Errorf("refusal %q, want idempotency_key_invalid", answer)
	}
}

// refuse has c write net/http's plain 400, and returns what the client
// reads instead.
func refuse(t *testing.T, c *refusingConn, client net.Conn) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := client.Read(b)
		got <- b[:n]
	}()
	if _, err := c.Write([]byte("HTTP/1.1 400 Bad Request" + refusalHeaders + "400 Bad Request")); err != nil {
		t.Fatal(err)
	}
	return <-got
}
