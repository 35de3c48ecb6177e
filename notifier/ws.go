package notifier

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/problem"
)

// sendBuffer is the kernel send buffer asked for each socket (Linux doubles
// it): some hundreds of frames.
const sendBuffer = 32 << 10

type connKey struct{}

// ConnContext, set as an http.Server's ConnContext, lets ServeHTTP size the
// socket's kernel buffer. A connection that wraps another (a listener's
// own type, as tls.Conn does) is unwrapped by its NetConn method down to
// the TCP connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	return context.WithValue(ctx, connKey{}, c)
}

// ServeHTTP serves GET /ws: authenticated before the upgrade (401 otherwise),
// a browser origin outside AllowedOrigins gets 403.
func (n *Notifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, err := auth.BearerToken(r, true)
	var who auth.Principal
	if err == nil {
		who, err = n.verifier.Verify(token)
	}
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	if !n.originAllowed(r) {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EForbidden, "this origin may not open a WebSocket here"))
		return
	}
	// A socket's kernel send buffer is kept small, so that a client that
	// stops reading fills it, then its frame buffer, soon, and is closed
	// with 1008 rather than allowed to pin megabytes of kernel memory.
	tc, _ := r.Context().Value(connKey{}).(*net.TCPConn)
	if tc != nil {
		tc.SetWriteBuffer(sendBuffer)
	}
	// The origin is checked above, and the handshake's form here, so that
	// their answers are problem documents too (Accept's are text/plain).
	if err := handshakeError(r); err != nil {
		h := w.Header()
		if crowdpass.Code(err) == crowdpass.EUpgradeRequired {
			h.Set("Connection", "Upgrade")
			h.Set("Upgrade", "websocket")
			h.Set("Sec-WebSocket-Version", "13")
		} else {
			h.Set("Allow", http.MethodGet)
		}
		problem.WriteError(w, err)
		return
	}
	if !n.serving() {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EUnavailable, "the notifier is shutting down"))
		return
	}
	defer n.live.Done()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered a bad handshake
	}
	conn.SetReadLimit(4 << 10)
	c := &client{customer: who.Customer, send: make(chan frame, n.cfg.Buffer), slow: make(chan struct{})}
	n.hub.add(c)
	n.sockets.Inc()
	defer func() {
		n.hub.remove(c)
		n.sockets.Dec()
	}()

	// The socket lives until the client goes, stops answering, stops
	// reading, or the notifier stops; not with the HTTP request.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	stop := context.AfterFunc(n.stopping(), cancel)
	defer stop()
	// Subscribes are answered apart from the reader, which must go on
	// reading meanwhile: it handles the client's pongs, and a subscribe may
	// wait seconds for a stalled database.
	subs := make(chan string, subscribeQueue)
	// The reader has a context of its own: a Read whose context ends
	// closes the socket at once, and the writer's close with 1001 when the
	// notifier stops needs the reader to take the client's answer.
	readCtx, cancelRead := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancelRead()
	var wg sync.WaitGroup
	wg.Go(func() { n.read(readCtx, cancel, conn, c, subs) })
	wg.Go(func() {
		for {
			select {
			case id := <-subs:
				n.subscribe(ctx, c, id)
			case <-ctx.Done():
				return
			}
		}
	})
	var sock syscall.Conn // nil: the socket's send queue cannot be read
	if tc != nil {
		sock = tc
	}
	n.write(ctx, conn, c, sock)
	cancel()
	cancelRead() // the socket is closed, or left unwritable: the reader ends
	wg.Wait()
}

// subscribeQueue is how many subscribes of one socket wait for their
// answer; one more is answered unavailable at once.
const subscribeQueue = 16

// write sends the client's frames and pings until the socket ends.
func (n *Notifier) write(ctx context.Context, conn *websocket.Conn, c *client, sock syscall.Conn) {
	ping := time.NewTicker(n.cfg.PingInterval)
	defer ping.Stop()
	for {
		// A socket that fell behind is closed before anything else is sent.
		select {
		case <-c.slow:
			conn.Close(websocket.StatusPolicyViolation, "the client is not reading")
			return
		default:
		}
		select {
		case <-c.slow:
			conn.Close(websocket.StatusPolicyViolation, "the client is not reading")
			return
		case <-ctx.Done():
			n.closeEnded(conn)
			return
		case f := <-c.send:
			if ctx.Err() != nil { // chosen over ctx.Done at random
				n.closeEnded(conn)
				return
			}
			if !n.makeRoom(ctx, conn, c, sock, len(f.data)) {
				return
			}
			wctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
			err := conn.Write(wctx, websocket.MessageText, f.data)
			cancel()
			if err != nil {
				return
			}
			if f.processedAt != nil {
				n.latency.Observe(n.cfg.Now().Sub(f.processedAt.Time).Seconds())
			}
		case <-ping.C:
			if !n.makeRoom(ctx, conn, c, sock, pingFrameSize) { // a ping fills the queue as a frame does
				return
			}
			pctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
			err := conn.Ping(pctx)
			cancel()
			switch {
			case err == nil:
			case ctx.Err() != nil:
				continue // the client left or the notifier stops: closed as such above
			case errors.Is(err, net.ErrClosed):
				return
			default:
				// No pong in time. A client answers pings as it reads: one that
				// stopped reading finds this close after the frames it left unread.
				n.kick(c)
				conn.Close(websocket.StatusPolicyViolation, "the client is not reading")
				return
			}
		}
	}
}

// closeEnded closes a socket whose context ended: with 1001 when the
// notifier stops (a write with the ended context would drop it without),
// at once when the client went.
func (n *Notifier) closeEnded(conn *websocket.Conn) {
	if n.stopping().Err() != nil {
		conn.Close(websocket.StatusGoingAway, "the server is shutting down")
	} else {
		conn.CloseNow()
	}
}

// makeRoom waits for room for size bytes in the socket's send queue
// (roomFor), and reports whether there is; if not, it has closed the
// socket: with 1008 if the client does not read, else as its end asks.
func (n *Notifier) makeRoom(ctx context.Context, conn *websocket.Conn, c *client, sock syscall.Conn, size int) bool {
	switch n.roomFor(ctx, c, sock, size) {
	case roomStopped:
		n.closeEnded(conn)
		return false
	case roomNone:
		n.kick(c)
		conn.Close(websocket.StatusPolicyViolation, "the client is not reading")
		return false
	}
	return true
}

// pingFrameSize is what a ping takes in the send queue.
const pingFrameSize = 16

// closeFrameRoom is what a close frame with its reason takes in the send
// queue, with room to spare.
const closeFrameRoom = 256

type room int

const (
	roomFree    room = iota // the frame fits: write it
	roomNone                // the client has not read for WriteTimeout, or is kicked
	roomStopped             // the socket's context ended
)

// roomFor waits until a frame of size bytes fits in the socket's send
// queue (sendBuffer of it, of the twice as much the kernel allows) with
// room left for a close frame. A write never fills the queue, so that a
// client that stops reading is always sent its close frame (1008), which
// it finds after the frames it left unread; a write into a full queue
// would block until it timed out, and the library then drops the
// connection without one. An empty queue takes any frame.
func (n *Notifier) roomFor(ctx context.Context, c *client, sock syscall.Conn, size int) room {
	if sock == nil {
		return roomFree
	}
	deadline := time.Now().Add(n.cfg.WriteTimeout)
	var tick *time.Ticker
	for {
		queued, ok := unsent(sock)
		if !ok || queued == 0 || queued+size+closeFrameRoom <= sendBuffer {
			return roomFree
		}
		if time.Now().After(deadline) {
			return roomNone
		}
		if tick == nil {
			tick = time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return roomStopped
		case <-c.slow:
			return roomNone
		case <-tick.C:
		}
	}
}

// read handles the client's messages: subscribes go to subs, to be
// answered in turn.
func (n *Notifier) read(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, c *client, subs chan<- string) {
	defer cancel()
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var msg struct {
			Type    string `json:"type"`
			OrderID string `json:"order_id"`
		}
		if typ != websocket.MessageText || json.Unmarshal(data, &msg) != nil || msg.Type != "subscribe" {
			n.offerJSON(c, map[string]string{"type": "error", "code": string(crowdpass.EMalformedBody),
				"detail": `send {"type": "subscribe", "order_id": "..."}`})
			continue
		}
		select {
		case subs <- msg.OrderID:
		default: // answered at once, so that the reader never waits
			n.offerJSON(c, map[string]string{"type": "error", "code": string(crowdpass.EUnavailable), "order_id": msg.OrderID,
				"detail": "too many subscribes waiting for their answer; send it again later"})
		}
	}
}

// subscribe answers with the order's current state, so that a client that
// connects late misses nothing.
func (n *Notifier) subscribe(ctx context.Context, c *client, rawID string) {
	notFound := map[string]string{"type": "error", "code": string(crowdpass.ENotFound), "order_id": rawID}
	id, err := crowdpass.ParseID(rawID)
	if err != nil {
		n.offerJSON(c, notFound)
		return
	}
	// An outcome this process saw is final, and what PostgreSQL holds:
	// answered at once, without a read that a stalled database would hold up.
	if n.pending != nil {
		if rec, ok := n.pending.Remembered(id); ok && rec.Decided != nil {
			if rec.CustomerID != c.customer {
				n.offerJSON(c, notFound)
				return
			}
			n.offerOrder(c, *rec.Decided)
			return
		}
	}
	dbCtx, cancel := context.WithTimeout(ctx, n.cfg.LookupTimeout)
	order, err := n.orders.Order(dbCtx, id)
	cancel()
	if err == nil && order.CustomerID == c.customer {
		n.offerOrder(c, order)
		return
	}
	if n.pending != nil {
		// A time of its own: a stalled database has used up the first.
		lookupCtx, cancel := context.WithTimeout(ctx, n.cfg.LookupTimeout)
		rec, perr := n.pending.Lookup(lookupCtx, id)
		cancel()
		if perr == nil && rec.CustomerID == c.customer && rec.Decided != nil {
			n.offerOrder(c, *rec.Decided) // an outcome this process saw
			return
		}
		if perr == nil && rec.CustomerID == c.customer && rec.Answer.Status == http.StatusAccepted {
			var a struct {
				crowdpass.Order
			}
			if json.Unmarshal(rec.Answer.Body, &a) == nil {
				a.Order.Status, a.Order.Tickets = crowdpass.StatusPending, []crowdpass.Ticket{}
				n.offerOrder(c, a.Order)
				return
			}
		}
	}
	if err != nil && crowdpass.Code(err) != crowdpass.ENotFound {
		n.offerJSON(c, map[string]string{"type": "error", "code": string(crowdpass.EUnavailable), "order_id": rawID})
		return
	}
	n.offerJSON(c, notFound)
}

// offerOrder sends an order with the fields of GET /orders/{id}.
func (n *Notifier) offerOrder(c *client, o crowdpass.Order) {
	body, err := json.Marshal(o)
	if err != nil {
		return
	}
	head := `{"type":"order.` + string(o.Status) + `",`
	n.offer(c, append([]byte(head), body[1:]...), nil)
}

func (n *Notifier) offerJSON(c *client, v any) {
	body, err := json.Marshal(v)
	if err == nil {
		n.offer(c, body, nil)
	}
}

// originAllowed applies the browser origin rule: no Origin header (not a
// browser), or an origin matching ALLOWED_ORIGINS; with none set, the API's
// own host.
func (n *Notifier) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(n.cfg.AllowedOrigins) == 0 {
		return strings.EqualFold(u.Host, r.Host)
	}
	for _, pattern := range n.cfg.AllowedOrigins {
		target := u.Host
		if strings.Contains(pattern, "://") {
			target = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		if ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// handshakeError reports what makes r not a WebSocket opening handshake
// (RFC 6455, 4.2.1) that Accept would take, as a problem: method_not_allowed
// for another method than GET (a HEAD), else upgrade_required, a 426, which
// the caller sends with the headers a handshake needs.
func handshakeError(r *http.Request) error {
	if r.Method != http.MethodGet {
		return crowdpass.Errorf(crowdpass.EMethodNotAllowed, "method %s is not allowed here: GET /ws opens a WebSocket", r.Method)
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if !r.ProtoAtLeast(1, 1) || !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") ||
		r.Header.Get("Sec-WebSocket-Version") != "13" || len(keys) != 1 || !validKey(keys[0]) {
		return crowdpass.Errorf(crowdpass.EUpgradeRequired, "GET /ws opens a WebSocket: send HTTP/1.1 with Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13 and one Sec-WebSocket-Key")
	}
	return nil
}

// validKey reports whether a Sec-WebSocket-Key is a base64 16-byte nonce.
func validKey(key string) bool {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	return err == nil && len(b) == 16
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
