package broker

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// countingConn counts the writes that reach the wire.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// pipe returns a lingerConn over one end of a TCP connection on loopback
// (whose writes are counted), and the other end.
func pipe(t *testing.T, linger time.Duration) (*lingerConn, *countingConn, net.Conn) {
	t.Helper()
	return pipeWorth(t, linger, nil)
}

// pipeWorth is pipe whose connection lingers only while worth says so.
func pipeWorth(t *testing.T, linger time.Duration, worth func() bool) (*lingerConn, *countingConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	counted := &countingConn{Conn: raw}
	lc := newLingerConn(counted, linger, worth)
	t.Cleanup(func() {
		lc.Close()
		peer.Close()
	})
	return lc, counted, peer
}

// Writes made while the connection lingers after a write go out together,
// in order, and every byte arrives.
func TestWritesDuringALingerShareOneSegment(t *testing.T) {
	t.Parallel()
	lc, counted, peer := pipe(t, time.Second)
	var want bytes.Buffer
	for i := range 50 {
		msg := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i)
		want.Write(msg)
		if n, err := lc.Write(msg); n != len(msg) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		// Spaced out, as publishes are: each would go out alone without
		// the linger.
		time.Sleep(time.Millisecond)
	}
	got := make([]byte, want.Len())
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the bytes arrived changed or out of order")
	}
	// The first write goes out alone; the other 49 came during its linger.
	if n := counted.count(); n > 2 {
		t.Errorf("%d writes reached the wire for 50 made within a linger, want 2", n)
	}
}

// A write after a quiet spell is not held for the linger.
func TestAWriteAfterAQuietSpellGoesOutAtOnce(t *testing.T) {
	t.Parallel()
	lc, _, peer := pipe(t, time.Hour)
	if _, err := lc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("the first write did not arrive: %v", err)
	}
}

// A connection whose linger would not pay off now (a single publish under
// way, a request waiting for its answer) sends each write as it comes.
func TestAWriteIsNotHeldWhenLingeringWouldNotPay(t *testing.T) {
	t.Parallel()
	lc, _, peer := pipeWorth(t, time.Hour, func() bool { return false })
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, msg := range []string{"request", "next"} {
		if _, err := lc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatalf("%q did not arrive: %v", msg, err)
		}
	}
}

// A peer that stops reading holds the writer back once maxUnsent bytes wait,
// and closing the connection ends that wait with an error.
func TestCloseEndsAWriteWaitingForRoom(t *testing.T) {
	t.Parallel()
	lc, _, _ := pipe(t, 0)
	result := writeMore(lc)
	select {
	case err := <-result:
		t.Fatalf("Write = %v through a peer that reads nothing, want it to wait", err)
	case <-time.After(100 * time.Millisecond):
	}
	lc.Close()
	if err := within(t, result, "Close"); err == nil {
		t.Fatal("Write = nil after Close, want an error")
	}
}

// writeMore writes far more than the sockets' buffers and maxUnsent hold,
// in the background.
func writeMore(lc *lingerConn) <-chan error {
	result := make(chan error, 1)
	go func() {
		_, err := lc.Write(make([]byte, 64<<20))
		result <- err
	}()
	return result
}

// within waits 10 s at most for the result of a Write that after should end.
func within(t *testing.T, result <-chan error, after string) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("Write still waiting 10 s after %s", after)
		return nil
	}
}

// A deadline set on the connection ends a write the peer does not read, and
// the writes after it fail.
func TestADeadlineEndsAStalledWrite(t *testing.T) {
	t.Parallel()
	lc, _, _ := pipe(t, 0)
	_ = lc.SetDeadline(time.Now().Add(200 * time.Millisecond))
	err := within(t, writeMore(lc), "the deadline")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Write = %v, want a timeout", err)
	}
	if _, err := lc.Write([]byte("x")); err == nil {
		t.Fatal("a Write after the failed one = nil, want its error")
	}
}

// Close sends what the connection holds before closing it: amqp091-go's
// last frame may be among it.
func TestCloseSendsWhatIsHeld(t *testing.T) {
	t.Parallel()
	lc, _, peer := pipe(t, time.Hour)
	for _, msg := range []string{"first", "close-ok"} {
		if _, err := lc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "firstclose-ok" {
		t.Fatalf("the peer got %q, want %q", got, "firstclose-ok")
	}
	if _, err := lc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// A write deadline that has passed fails the Writes after it, as it would
// on the connection itself.
func TestAWriteAfterItsDeadlineFails(t *testing.T) {
	t.Parallel()
	lc, _, _ := pipe(t, 0)
	_ = lc.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := lc.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write after its deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	_ = lc.SetWriteDeadline(time.Time{})
	if _, err := lc.Write([]byte("x")); err != nil {
		t.Fatalf("Write with the deadline cleared = %v", err)
	}
}

// A connection dropped before its first write starts no writer: amqp091-go
// drops one without closing it when it cannot load a TLS configuration.
func TestAConnectionNeverWrittenHoldsNoWriter(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	before := runtime.NumGoroutine()
	conns := make([]*lingerConn, 0, 20)
	for range 20 {
		lc, _, _ := pipe(t, writeLinger)
		conns = append(conns, lc)
	}
	if n := runtime.NumGoroutine(); n > before+5 {
		t.Fatalf("%d goroutines for 20 connections never written to, %d before", n, before)
	}
	_ = conns
}
