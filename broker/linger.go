package broker

import (
	"net"
	"sync"
	"time"
)

// writeLinger is how long a connection to the broker waits after a write
// before the next, gathering what is written meanwhile into one segment.
//
// amqp091-go writes every publish with a system call of its own, and the
// broker pays for each segment it reads: waking its reader, channel and
// queue processes, and a write-ahead-log batch for a quorum queue. At the
// 7,000 publishes a second of a sale, RabbitMQ 3.10 spent 140 µs of CPU on
// each one read alone, against 27 µs when they came in bulk; lingering 2 ms
// halved that, and a sale on one machine sold 20–25% faster with a lower
// POST p99 (docs/benchmarks.md, "Session 12"). A write after a quiet spell
// goes out at once: the linger delays only writes that follow another
// within writeLinger, by at most that long.
const writeLinger = 2 * time.Millisecond

// maxUnsent bounds the bytes a lingerConn holds for its writer: a Write
// waits while that much is unsent, so that a broker that stops reading
// still holds its publishers back, as the socket's own buffer does.
const maxUnsent = 256 << 10

// lingerConn is a net.Conn whose writes are sent by a goroutine of its own,
// one system call for all those made since its last one and at most one
// call every linger. A Write returns once its bytes are held; an error of
// the underlying connection is returned by the Writes that follow it, as a
// buffered writer's would be. Close, or a deadline set on the connection,
// ends a Write waiting for room.
type lingerConn struct {
	net.Conn
	linger time.Duration

	mu      sync.Mutex
	cond    *sync.Cond // signalled when unsent changes, err is set or the conn closes
	unsent  []byte
	err     error
	closed  bool
	closing chan struct{} // closed by Close: ends a linger
	stopped chan struct{} // closed when the writer has returned
}

func newLingerConn(c net.Conn, linger time.Duration) *lingerConn {
	lc := &lingerConn{Conn: c, linger: linger, closing: make(chan struct{}), stopped: make(chan struct{})}
	lc.cond = sync.NewCond(&lc.mu)
	go lc.writer()
	return lc
}

// Write holds p for the writer, waiting while maxUnsent bytes are held.
func (c *lingerConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(p) {
		for c.err == nil && !c.closed && len(c.unsent) >= maxUnsent {
			c.cond.Wait()
		}
		switch {
		case c.err != nil:
			return n, c.err
		case c.closed:
			return n, net.ErrClosed
		}
		k := min(len(p)-n, maxUnsent-len(c.unsent))
		c.unsent = append(c.unsent, p[n:n+k]...)
		n += k
		c.cond.Broadcast()
	}
	return n, nil
}

// writer sends what Write holds until the conn is closed or a write fails.
func (c *lingerConn) writer() {
	defer close(c.stopped)
	var spare []byte
	var linger *time.Timer
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.unsent) == 0 && c.err == nil && !c.closed {
			c.cond.Wait()
		}
		if c.err != nil || c.closed {
			return
		}
		out := c.unsent
		c.unsent = spare[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		if err == nil && c.linger > 0 {
			if linger == nil {
				linger = time.NewTimer(c.linger)
			} else {
				linger.Reset(c.linger)
			}
			select {
			case <-linger.C:
			case <-c.closing:
			}
		}
		c.mu.Lock()
		spare = out[:0]
		if err != nil {
			c.err = err
			c.cond.Broadcast()
		}
	}
}

// Close closes the connection, dropping what is unsent, and waits for the
// writer to return.
func (c *lingerConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.closing)
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	err := c.Conn.Close() // ends a write under way
	<-c.stopped
	return err
}
