package broker

import (
	"net"
	"os"
	"sync"
	"time"
)

// writeLinger is how long a publisher's connection waits after a write
// before the next, gathering what is written meanwhile into one segment.
//
// amqp091-go writes every publish with a system call of its own, and the
// broker pays for each segment it reads: waking its reader, channel and
// queue processes, and a write-ahead-log batch for a quorum queue. At the
// 7,000 publishes a second of a sale, RabbitMQ 3.10 spent 140 µs of CPU on
// each one read alone, against 27 µs when they came in bulk; lingering 2 ms
// halved that, and a sale on one machine sold 20–25% faster with a lower
// POST p99 (docs/benchmarks.md, "Session 12").
//
// The price: a write within writeLinger of the last one waits for the rest
// of it. So only the publisher's connection lingers, and only while more
// than one publish waits for its confirm: a caller that publishes one
// message at a time, a request and its answer (a queue inspection, the
// set-up of a session) in a quiet spell, and the consumers' connections
// never wait. Under load a queue inspection takes about 2 ms more per
// round trip.
const writeLinger = 2 * time.Millisecond

const (
	// maxUnsent bounds the bytes a lingerConn holds for its writer: a Write
	// waits while that much is unsent, so that a broker that stops reading
	// still holds its publishers back, as the socket's own buffer does.
	maxUnsent = 256 << 10
	// noLingerAfter is the size of a write after which the writer does not
	// linger: there is no segment to save, and lingering would cap a large
	// message's rate.
	noLingerAfter = 64 << 10
	// closeFlush bounds how long Close tries to send what it still holds.
	closeFlush = 100 * time.Millisecond
)

// lingerConn is a net.Conn whose writes are sent by a goroutine of its own,
// one system call for all those made since its last one and at most one
// call every linger. A write after a quiet spell goes out at once.
//
// A Write returns once its bytes are held. An error of the underlying
// connection is returned by the Writes that follow it, as a buffered
// writer's would be, and so is an expired write deadline; a deadline set on
// the connection, or Close, also ends a Write waiting for room. Close sends
// what is held, within closeFlush, before closing.
type lingerConn struct {
	net.Conn
	linger time.Duration
	// worth, if set, tells whether a linger may pay off now; when it says
	// no, the writer sends each write as it comes.
	worth func() bool

	mu       sync.Mutex
	cond     *sync.Cond // signalled when unsent changes, err is set or the conn closes
	unsent   []byte
	err      error
	deadline time.Time // the write deadline last set
	closed   bool
	started  bool          // the writer runs, from the first Write on
	closing  chan struct{} // closed by Close: ends a linger
	stopped  chan struct{} // closed when the writer has returned
}

func newLingerConn(c net.Conn, linger time.Duration, worth func() bool) *lingerConn {
	lc := &lingerConn{Conn: c, linger: linger, worth: worth, closing: make(chan struct{}), stopped: make(chan struct{})}
	lc.cond = sync.NewCond(&lc.mu)
	return lc
}

// Write holds p for the writer, waiting while maxUnsent bytes are held.
func (c *lingerConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started && !c.closed {
		// Started here, not when dialled: a connection amqp091-go drops
		// before its first write (a TLS configuration it cannot load) is
		// never closed, and would keep a writer waiting for ever.
		c.started = true
		go c.writer()
	}
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
		case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
			return n, os.ErrDeadlineExceeded
		}
		k := min(len(p)-n, maxUnsent-len(c.unsent))
		c.unsent = append(c.unsent, p[n:n+k]...)
		n += k
		c.cond.Broadcast()
	}
	return n, nil
}

// writer sends what Write holds until a write fails, or the conn is closed
// and all it held is sent.
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
		if c.err != nil || len(c.unsent) == 0 {
			return // failed, or closed with nothing left
		}
		out := c.unsent
		c.unsent = spare[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		if err == nil && c.linger > 0 && len(out) < noLingerAfter && (c.worth == nil || c.worth()) {
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

// SetDeadline and SetWriteDeadline also bound the Writes held here.
func (c *lingerConn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *lingerConn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *lingerConn) setWriteDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close sends what is held, for at most closeFlush (amqp091-go's last
// frame, a close-ok, may be among it), and closes the connection.
func (c *lingerConn) Close() error {
	c.mu.Lock()
	started := c.started
	if !c.closed {
		c.closed = true
		close(c.closing)
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	if started {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlush)) // ends a write the peer does not read
		<-c.stopped
	}
	return c.Conn.Close()
}
