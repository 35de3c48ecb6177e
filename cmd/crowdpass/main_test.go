package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/sql/migrations"
	"github.com/crowdpass/crowdpass/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(db *testkit.DB, ns string, extra ...string) func(string) string {
	vars := map[string]string{
		"DATABASE_URL":        db.URL,
		"AMQP_URL":            testkit.AMQPURL(),
		"REDIS_URL":           testkit.RedisURL(),
		"CROWDPASS_NAMESPACE": ns,
		"JWT_SECRET":          "test-secret",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars[extra[i]] = extra[i+1]
	}
	return func(k string) string { return vars[k] }
}

func runCLI(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(testkit.Context(t), args, getenv, &out, &errOut)
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

func countEvents(t *testing.T, db *testkit.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEventCreatePrintsTheEventAsStored(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	stdout, stderr, code := runCLI(t, env(db, ""), "event", "create", "--name", "World Cup Final",
		"--category", "Category 1:100:25000", "--category", "Box: VIP:2", "--max-per-customer", "2",
		"--opens-at", "2026-07-19T15:00:00Z", "--closes-at", "2026-07-19T18:00:00.5+02:00")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var printed crowdpass.Event
	if err := json.Unmarshal([]byte(stdout), &printed); err != nil {
		t.Fatalf("output is not an event: %v\n%s", err, stdout)
	}
	stored, err := postgres.NewStore(db.Pool, nil).Event(testkit.Context(t), printed.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(stored)
	if strings.TrimSpace(stdout) != string(want) {
		t.Errorf("printed\n%s\nstored\n%s", stdout, want)
	}
	if c := stored.Categories[1]; c.Name != "Box: VIP" || c.Capacity != 2 || c.PriceCents != 0 {
		t.Errorf("second category = %+v", c)
	}
	if stored.ClosesAt.String() != "2026-07-19T16:00:00.500000Z" || stored.MaxPerCustomer != 2 {
		t.Errorf("stored event = %+v", stored)
	}
}

func TestBadFlagsExitTwoAndWriteNothing(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	for _, args := range [][]string{
		{"event", "create"},
		{"event", "create", "--name", "X"},
		{"event", "create", "--name", "X", "--category", "A"},
		{"event", "create", "--name", "X", "--category", "A:-1"},
		{"event", "create", "--name", "X", "--category", "A:0"},
		{"event", "create", "--name", "X", "--category", "A:10:-5"},
		{"event", "create", "--name", "X", "--category", "A:10", "--category", "A:5"},
		{"event", "create", "--name", "X", "--category", "A:10", "--max-per-customer", "0"},
		{"event", "create", "--name", "X", "--category", "A:10", "--opens-at", "tomorrow"},
		{"event", "create", "--name", "X", "--category", "A:10", "--opens-at", "2030-01-02T00:00:00Z", "--closes-at", "2030-01-01T00:00:00Z"},
		{"event", "create", "--name", "X", "--category", "A:10", "stray"},
		{"event", "delete"},
		{"token"},
		{"token", "--customer", strings.Repeat("x", 256)},
		{"token", "--customer", "a", "--ttl", "-1h"},
		{"token", "--customer", "a", "--ttl", "soon"},
		{"token", "--customer", "a", "--ttl", "1ns"},
		{"migrate", "sideways"},
		{"worker", "--worker-batch", "-1"},
		{"dance"},
		{},
	} {
		_, stderr, code := runCLI(t, env(db, ""), args...)
		if code != 2 || !strings.Contains(stderr, "crowdpass:") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
	if n := countEvents(t, db); n != 0 {
		t.Errorf("%d events written by rejected commands", n)
	}
	if _, stderr, _ := runCLI(t, env(db, ""), "event", "create", "--name", "X", "--category", "A:10:1.5"); !strings.Contains(stderr, `price "1.5"`) {
		t.Errorf("a price that is not whole: stderr %q, want it to name the price", stderr)
	}
}

func TestBadEnvironmentExitsTwo(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	for name, value := range map[string]string{"WORKER_RATE": "fast", "IDEMPOTENCY_TTL": "1h", "OUTBOX_RETENTION": "-1h", "DEMO_MODE": "maybe", "AMQP_URL": "notaurl"} {
		_, stderr, code := runCLI(t, env(db, "", name, value), "worker")
		if code != 2 || !strings.Contains(stderr, name) {
			t.Errorf("%s=%s: exit %d, stderr %q", name, value, code, stderr)
		}
	}
	// A DATABASE_URL that does not parse, for every command that opens the database.
	for _, args := range [][]string{{"worker"}, {"migrate", "up"}, {"migrate", "status"}, {"event", "create", "--name", "X", "--category", "A:10"}, {"rush", "--buyers", "1"}} {
		_, stderr, code := runCLI(t, env(db, "", "DATABASE_URL", "::bad"), args...)
		if code != 2 || !strings.Contains(stderr, "DATABASE_URL") {
			t.Errorf("DATABASE_URL=::bad %q: exit %d, stderr %q; want 2 naming DATABASE_URL", args, code, stderr)
		}
	}
}

func TestTokenIsSignedWithTheSecret(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	stdout, _, code := runCLI(t, env(db, ""), "token", "--customer", "alice", "--admin", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	a, _ := auth.New([]byte("test-secret"), nil)
	p, err := a.Verify(strings.TrimSpace(stdout))
	if err != nil || p.Customer != "alice" || !p.Admin {
		t.Errorf("Verify = %+v, %v", p, err)
	}
}

func TestMigrateStatusListsAppliedMigrations(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	stdout, stderr, code := runCLI(t, env(db, ""), "migrate", "status")
	files, _ := fs.Glob(migrations.FS, "*.sql")
	if code != 0 || len(files) == 0 || strings.Count(stdout, "applied") != len(files) {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestWorkerRoleServesReadinessAndStopsGracefully(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"worker"}, env(db, testkit.Namespace(t), "HTTP_ADDR", addr), io.Discard, io.Discard)
	}()
	waitReady(t, addr)
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not stop")
	}
}

// A worker cannot decide anything without PostgreSQL, even before an order
// comes to show it: its process is unready (503), not degraded.
func TestAWorkerWithoutItsDatabaseIsNotReady(t *testing.T) {
	t.Parallel()
	addr, closed := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs syncBuffer
	ns := testkit.Namespace(t)
	go func() {
		getenv := env(&testkit.DB{}, ns, "HTTP_ADDR", addr,
			"DATABASE_URL", "postgres://postgres@"+closed+"/crowdpass?sslmode=disable")
		done <- run(ctx, []string{"worker"}, getenv, io.Discard, &logs)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("worker did not stop")
		}
	}()
	// The worker takes no order before its database can decide them.
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "taking no orders until it can") },
		"the worker waiting for its database")
	if code, body := readyz(t, addr); code != http.StatusServiceUnavailable || body.Status != "down" || body.Checks["postgres"] != "down" || body.Checks["worker"] != "down" {
		t.Errorf("readyz %d %+v, want 503 down with postgres and worker down", code, body)
	}
	ch := testkit.Channel(t)
	if q, err := ch.QueueDeclarePassive(ns+"ticket_orders", true, false, false, false, nil); err == nil && q.Consumers > 0 {
		t.Errorf("%d consumers on the queue while the worker cannot decide", q.Consumers)
	}
}

// A notifier without PostgreSQL still pushes what the broker delivers, but
// can neither answer a subscribe nor catch up: degraded, not ok.
func TestANotifierWithoutItsDatabaseIsDegraded(t *testing.T) {
	t.Parallel()
	addr, closed := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		getenv := env(&testkit.DB{}, testkit.Namespace(t), "HTTP_ADDR", addr,
			"DATABASE_URL", "postgres://postgres@"+closed+"/crowdpass?sslmode=disable")
		done <- run(ctx, []string{"notifier"}, getenv, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("notifier did not stop")
		}
	}()
	var code int
	var body readiness
	testkit.Eventually(t, 30*time.Second, func() bool {
		code, body = readyz(t, addr)
		return body.Checks["notifier"] == "ok"
	}, "the notifier ready")
	if code != http.StatusOK || body.Status != "degraded" || body.Checks["postgres"] != "down" {
		t.Errorf("readyz %d %+v, want 200 degraded with postgres down", code, body)
	}
}

type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// readyz reads a process's /readyz; a process not listening yet reads as
// no status.
func readyz(t *testing.T, addr string) (int, readiness) {
	t.Helper()
	var body readiness
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, body
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
