package rush

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The generator's hand-written HTTP/1.1 client must read what net/http's
// server writes: fixed-length and chunked bodies, problem codes, the
// headers a buyer acts on, and a server that closes the connection.
func TestConnReadsServerAnswers(t *testing.T) {
	var got struct{ key, auth, body string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.key, got.auth, got.body = r.Header.Get("Idempotency-Key"), r.Header.Get("Authorization"), string(body)
		switch r.Header.Get("Idempotency-Key") {
		case "accepted":
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"order_id":"x","status":"pending"}`)
		case "busy":
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"type":"urn:x","status":409,"code":"request_in_progress"}`)
		case "chunked":
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"code":"sold_`)
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, `out"}`)
		case "close":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	c, err := newConn(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	tests := []struct {
		key  string
		want answer
		open bool
	}{
		{"accepted", answer{status: 202, replayed: true}, true},
		{"busy", answer{status: 409, code: "request_in_progress", retryAfter: 2 * time.Second}, true},
		{"chunked", answer{status: 409, code: "sold_out"}, true},
		{"close", answer{status: 503}, false},
		{"accepted", answer{status: 202, replayed: true}, true}, // dials again
	}
	for _, tt := range tests {
		a, err := c.post(t.Context(), "tok", tt.key, []byte(`{"q":1}`))
		if err != nil {
			t.Fatalf("%s: %v", tt.key, err)
		}
		if a != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.key, a, tt.want)
		}
		if open := c.nc != nil; open != tt.open {
			t.Errorf("%s: connection open = %v, want %v", tt.key, open, tt.open)
		}
		if got.key != tt.key || got.auth != "Bearer tok" || got.body != `{"q":1}` {
			t.Errorf("%s: server got %+v", tt.key, got)
		}
	}
}

func TestConnRejectsNonHTTPTargets(t *testing.T) {
	for _, target := range []string{"https://example.com", "127.0.0.1:8080", "http://"} {
		if _, err := newConn(target, time.Second); err == nil {
			t.Errorf("newConn(%q) succeeded", target)
		}
	}
}

func TestConnResendsOnAConnectionTheServerClosed(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	c, err := newConn(srv.URL+"/shop/", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if a, err := c.post(t.Context(), "tok", "k1", []byte(`{}`)); err != nil || a.status != 202 {
		t.Fatalf("first: %+v, %v", a, err)
	}
	srv.CloseClientConnections() // as a server closing an idle keep-alive connection
	if a, err := c.post(t.Context(), "tok", "k2", []byte(`{}`)); err != nil || a.status != 202 {
		t.Fatalf("after the server closed the connection: %+v, %v", a, err)
	}
	if len(paths) != 2 || paths[0] != "/shop/orders" || paths[1] != "/shop/orders" {
		t.Errorf("paths %q, want /shop/orders twice", paths)
	}
}

func TestConnGivesUpWhenItsContextEnds(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release)
	const timeout = time.Minute
	c, err := newConn(srv.URL, timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	begin := time.Now()
	if _, err := c.post(ctx, "tok", "k", []byte(`{}`)); err == nil {
		t.Fatal("post answered although the server never did")
	}
	if took := time.Since(begin); took >= timeout/2 {
		t.Errorf("post returned after %v: it waited for its timeout, not its context", took)
	}
}
