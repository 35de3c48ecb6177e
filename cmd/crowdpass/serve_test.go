package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
)

// TestServeTakesAnOrderToTheBuyersSocket runs the whole system as make run
// does, one process, and follows one order from POST /orders to the socket.
func TestServeTakesAnOrderToTheBuyersSocket(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	addr := freeAddr(t)
	getenv := env(db, testkit.Namespace(t), "HTTP_ADDR", addr)
	event, err := postgres.NewStore(db.Pool, nil).CreateEvent(testkit.Context(t), crowdpass.EventSpec{
		Name: "Final", Categories: []crowdpass.CategorySpec{{Name: "A", Capacity: 5}}})
	if err != nil {
		t.Fatal(err)
	}

	startServe(t, getenv, addr)
	base := "http://" + addr

	authority, _ := auth.New([]byte("test-secret"), nil)
	token, _ := authority.Issue("alice", false, time.Hour)
	ws, _, err := websocket.Dial(testkit.Context(t), "ws://"+addr+"/ws?access_token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	status, _, body := postOrder(t, base, token, "e2e-1", event, 2)
	var accepted struct {
		OrderID string `json:"order_id"`
	}
	json.Unmarshal(body, &accepted)
	if status != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %s", status, body)
	}

	readCtx, readCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer readCancel()
	_, data, err := ws.Read(readCtx)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Type    string             `json:"type"`
		OrderID string             `json:"order_id"`
		Tickets []crowdpass.Ticket `json:"tickets"`
	}
	if err := json.Unmarshal(data, &f); err != nil || f.Type != "order.confirmed" || f.OrderID != accepted.OrderID || len(f.Tickets) != 2 {
		t.Errorf("socket got %s", data)
	}
	testkit.CheckInvariants(t, db.Pool)
}

// A role without HTTP_ADDR serves no HTTP; it still stops when told. A lone
// relay's publisher used to wait for the end of an HTTP server it never had.
func TestRolesWithoutHTTPStopWhenTold(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	ns := testkit.Namespace(t)
	for _, role := range []string{"relay", "worker"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{role}, env(db, ns), io.Discard, io.Discard) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s stopped with %v", role, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still running 30 s after it was told to stop", role)
		}
	}
}

// Roles in processes of their own, two APIs among them: a key accepted at
// one API and decided is answered with its 202 by the other once Redis has
// lost it, because every API learns the decided orders.
func TestALoneAPIAnswersAKeyDecidedElsewhereAfterRedisLostIt(t *testing.T) {
	t.Parallel()
	db, ns, event := oneTicketSale(t)
	a, b := freeAddr(t), freeAddr(t)
	startRole(t, "worker", env(db, ns), "")
	startRole(t, "relay", env(db, ns), "")
	startRole(t, "api", env(db, ns, "HTTP_ADDR", a), a)
	startRole(t, "api", env(db, ns, "HTTP_ADDR", b), b)

	authority, _ := auth.New([]byte("test-secret"), nil)
	token, _ := authority.Issue("alice", false, time.Hour)
	order := func(addr string) (int, http.Header, []byte) {
		t.Helper()
		return postOrder(t, "http://"+addr, token, "k", event, 1)
	}
	status, _, first := order(a)
	if status != http.StatusAccepted {
		t.Fatalf("first order at API a: %d %s", status, first)
	}
	// API b has the outcome once its consumer has seen one.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(scrapeMetrics(t, b), `crowdpass_notifier_outcome_lag_seconds_count{path="broker"} 1`)
	}, "the outcome at API b")
	if err := testkit.DeleteRedisKeys(testkit.Context(t), ns); err != nil {
		t.Fatal(err)
	}
	status, header, again := order(b)
	if status != http.StatusAccepted || header.Get("Idempotent-Replayed") != "true" || string(again) != string(first) {
		t.Errorf("the key at API b after Redis lost it: %d %s, want a's 202 replayed (%s)", status, again, first)
	}
	testkit.CheckInvariants(t, db.Pool)
}

// TestRushSellsEveryTicketAndPassesItsAudit runs a small rush against serve.
func TestRushSellsEveryTicketAndPassesItsAudit(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	addr := freeAddr(t)
	getenv := env(db, testkit.Namespace(t), "HTTP_ADDR", addr)
	startServe(t, getenv, addr)

	stdout, stderr, code := runCLI(t, getenv, "rush", "--target", "http://"+addr, "--buyers", "600", "--tickets", "150",
		"--categories", "3", "--concurrency", "32", "--watchers", "50", "--double-click", "0.2", "--json", "--progress=false", "--baseline", "500")
	if code != 0 {
		t.Fatalf("rush exited %d: %s\n%s", code, stderr, stdout)
	}
	var rep struct {
		Sold             int64            `json:"tickets_sold"`
		Accepted         int64            `json:"accepted_orders"`
		NeverDecided     int64            `json:"accepted_never_decided"`
		Violations       []string         `json:"violations"`
		Answers          map[string]int64 `json:"answers"`
		WatchersNotified int64            `json:"watchers_notified"`
		WatchersAccepted int64            `json:"watchers_accepted"`
		Bare             float64          `json:"bare_requests_per_second"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout)
	}
	if rep.Sold != 150 || rep.NeverDecided != 0 || len(rep.Violations) != 0 || rep.WatchersNotified != rep.WatchersAccepted || rep.Bare == 0 {
		t.Errorf("report %+v", rep)
	}
	for label := range rep.Answers {
		if strings.HasPrefix(label, "5") || label == "error" {
			t.Errorf("unexpected answers: %v", rep.Answers)
		}
	}
}

// startServe runs crowdpass serve until the test ends and waits until
// /readyz on addr says it is ready.
// postOrder buys quantity tickets of event's first category at base under
// key, and returns the answer.
func postOrder(t *testing.T, base, token, key string, event crowdpass.Event, quantity int) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/orders", strings.NewReader(
		fmt.Sprintf(`{"event_id":%q,"category_id":%q,"quantity":%d}`, event.ID, event.Categories[0].ID, quantity)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func startServe(t *testing.T, getenv func(string) string, addr string) {
	t.Helper()
	startRole(t, "serve", getenv, addr)
}

// startRole runs one crowdpass role until the test ends, and waits for its
// /readyz where it serves HTTP (addr not empty).
func startRole(t *testing.T, role string, getenv func(string) string, addr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{role}, getenv, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s stopped with %v", role, err)
		}
	})
	if addr != "" {
		waitReady(t, addr)
	}
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "%s ready", addr)
}

// A key whose order was decided before its API process started is answered
// with its 202 after Redis lost its record: the process recalls the latest
// outcomes from the outbox when it starts, so that a restart followed by a
// flush does not make the key new (sold_out here: the ticket is its own).
func TestAnAPIStartedAfterAnOrderWasDecidedAnswersItsKeyAfterRedisLostIt(t *testing.T) {
	t.Parallel()
	db, ns, event := oneTicketSale(t)
	a := freeAddr(t)
	startServe(t, env(db, ns, "HTTP_ADDR", a), a)
	authority, _ := auth.New([]byte("test-secret"), nil)
	token, _ := authority.Issue("alice", false, time.Hour)
	status, _, first := postOrder(t, "http://"+a, token, "k", event, 1)
	if status != http.StatusAccepted {
		t.Fatalf("first order: %d %s", status, first)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, db.Pool) == 1 }, "the order decided")

	// A process started now has seen no outcome live.
	b := freeAddr(t)
	startRole(t, "api", env(db, ns, "HTTP_ADDR", b), b)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(scrapeMetrics(t, b), "crowdpass_notifier_recalled_total 1\n")
	}, "the outcome recalled at API b")
	if err := testkit.DeleteRedisKeys(testkit.Context(t), ns); err != nil {
		t.Fatal(err)
	}
	status, header, again := postOrder(t, "http://"+b, token, "k", event, 1)
	if status != http.StatusAccepted || header.Get("Idempotent-Replayed") != "true" || string(again) != string(first) {
		t.Errorf("the key at API b after Redis lost it: %d %s, want its 202 replayed (%s)", status, again, first)
	}
	testkit.CheckInvariants(t, db.Pool)
}

// oneTicketSale makes a database and a namespace for a test, and an event
// of one category with one ticket.
func oneTicketSale(t *testing.T) (*testkit.DB, string, crowdpass.Event) {
	t.Helper()
	db := testkit.NewDB(t)
	event, err := postgres.NewStore(db.Pool, nil).CreateEvent(testkit.Context(t), crowdpass.EventSpec{
		Name: "Final", Categories: []crowdpass.CategorySpec{{Name: "A", Capacity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return db, testkit.Namespace(t), event
}

func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	return string(metrics)
}
