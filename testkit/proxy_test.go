package testkit_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/crowdpass/crowdpass/testkit"
)

// A stalled proxy holds bytes, in both directions, until Resume, and none
// is lost.
func TestAStalledProxyHoldsBytesUntilResume(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	p := testkit.NewProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(deadline time.Duration) (string, error) {
		_ = c.SetReadDeadline(time.Now().Add(deadline))
		buf := make([]byte, 8)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if got, err := echo(10 * time.Second); got != "a" || err != nil {
		t.Fatalf("flowing: %q, %v", got, err)
	}
	p.Stall()
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if got, err := echo(300 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled, the echo came back: %q, %v", got, err)
	}
	p.Resume()
	if got, err := echo(10 * time.Second); got != "b" || err != nil {
		t.Fatalf("resumed: %q, %v", got, err)
	}
}
