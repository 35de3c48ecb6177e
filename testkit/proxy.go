package testkit

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections to a target so that a test can cut them,
// as a crashed or restarted server would, or stall them, as a server that
// stopped answering would.
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refused bool
	closed  bool
	flowing chan struct{} // closed while bytes flow; open while stalled
	done    chan struct{} // closed when the proxy closes
	wg      sync.WaitGroup
	held    atomic.Int64 // bytes read while stalled
}

// NewProxy listens on a free loopback port and forwards to target (host:port).
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}, flowing: make(chan struct{}), done: make(chan struct{})}
	close(p.flowing)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// NewURLProxy starts a proxy to the host of the service URL raw and
// returns it with raw rewritten to go through it.
func NewURLProxy(t testing.TB, raw string) (*Proxy, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("proxy target %q: %v", raw, err)
	}
	p := NewProxy(t, u.Host)
	u.Host = p.Addr()
	return p, u.String()
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every open connection; new ones are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Refuse makes the proxy cut every connection and close new ones at once,
// until Allow, as a server that is down would.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	p.refused = true
	p.mu.Unlock()
	p.Cut()
}

// Stall holds every byte, in both directions and on new connections too,
// until Resume: connections stay open and nothing answers, as with a
// server stopped by SIGSTOP.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default: // already stalled
	}
}

// Resume undoes Stall: the held bytes go on.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}

// Held is how many bytes the proxy has read while stalled, in either
// direction: a test waits on it to know that a write reached the proxy.
func (p *Proxy) Held() int64 { return p.held.Load() }

// Allow undoes Refuse.
func (p *Proxy) Allow() {
	p.mu.Lock()
	p.refused = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refused := p.refused
		p.mu.Unlock()
		if refused {
			client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target) // not under p.mu: flowing bytes take it
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.refused || p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			continue
		}
		p.conns[client] = struct{}{}
		p.conns[server] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(client, server)
		go p.pipe(server, client)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	// A copy ends with an error whenever a side is cut; that is the point.
	// While stalled, a side's close waits as its bytes do: a stopped server
	// sees nothing.
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.stalled() {
			p.held.Add(int64(n))
		}
		if !p.flow() {
			break
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *Proxy) stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		return false
	default:
		return true
	}
}

// flow waits while the proxy is stalled; false once it is closed.
func (p *Proxy) flow() bool {
	p.mu.Lock()
	flowing := p.flowing
	p.mu.Unlock()
	select {
	case <-flowing:
		return true
	case <-p.done:
		return false
	}
}

func (p *Proxy) close() {
	close(p.done)
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
