package postgres_test

import (
	"fmt"
	"io/fs"
	"testing"

	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/sql/migrations"
	"github.com/crowdpass/crowdpass/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T) (*testkit.DB, *postgres.Store) {
	t.Helper()
	return setupBench(t)
}

func setupBench(tb testing.TB) (*testkit.DB, *postgres.Store) {
	tb.Helper()
	db := testkit.NewDB(tb)
	return db, postgres.NewStore(db.Pool, nil)
}

func TestBatchAllocationServesEarliestFirst(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 4, 6)
	quantities := []int{3, 2, 4, 1, 2}
	want := []crowdpass.Reason{"", "", crowdpass.ReasonSoldOut, "", crowdpass.ReasonSoldOut}
	var reqs []crowdpass.OrderRequest
	for i, q := range quantities {
		reqs = append(reqs, testkit.OrderRequest(fmt.Sprintf("c%d", i), "k", event, 0, q))
	}

	decisions, err := store.DecideOrders(testkit.Context(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	seats := map[int]bool{}
	for i, d := range decisions {
		if d.Order == nil || d.Order.Reason != want[i] {
			t.Fatalf("order %d (quantity %d): decision %+v, want reason %q", i, quantities[i], d.Order, want[i])
		}
		for _, tk := range d.Order.Tickets {
			seats[tk.Seat] = true
		}
	}
	for seat := 1; seat <= 6; seat++ {
		if !seats[seat] {
			t.Errorf("seat %d not sold", seat)
		}
	}
	got, err := store.Event(testkit.Context(t), event.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Categories[0].Remaining; r != 0 {
		t.Errorf("remaining = %d, want 0", r)
	}
	testkit.CheckInvariants(t, db.Pool)
}

func TestDecidingTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 4, 10)
	req := testkit.OrderRequest("alice", "k", event, 0, 2)

	first, err := store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{req, req})
	if err != nil {
		t.Fatal(err)
	}
	if first[0].Order == nil || first[0].Order.Status != crowdpass.StatusConfirmed || first[1].Order != nil {
		t.Fatalf("first decisions = %+v", first)
	}
	again, err := store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{req})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Order != nil || again[0].Invalid != nil {
		t.Fatalf("a decided order was decided again: %+v", again[0])
	}
	order, err := store.Order(testkit.Context(t), req.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	if len(order.Tickets) != 2 || *order.ProcessedAt != *first[0].Order.ProcessedAt {
		t.Errorf("stored order %+v differs from the decision %+v", order, first[0].Order)
	}
	testkit.CheckInvariants(t, db.Pool)
}

func TestLimitCountsConfirmedTicketsAcrossCategories(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 3, 10, 1)
	reqs := []crowdpass.OrderRequest{
		testkit.OrderRequest("alice", "1", event, 0, 2),
		testkit.OrderRequest("alice", "2", event, 1, 1), // confirmed: 3 held
		testkit.OrderRequest("alice", "3", event, 0, 1), // limit
		testkit.OrderRequest("bob", "1", event, 1, 1),   // sold out, and holds nothing
		testkit.OrderRequest("bob", "2", event, 0, 3),   // confirmed: the sold-out order did not count
	}
	decisions, err := store.DecideOrders(testkit.Context(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	want := []crowdpass.Reason{"", "", crowdpass.ReasonLimitExceeded, crowdpass.ReasonSoldOut, ""}
	for i, d := range decisions {
		if d.Order.Reason != want[i] {
			t.Errorf("order %d: reason %q, want %q", i, d.Order.Reason, want[i])
		}
	}
	testkit.CheckInvariants(t, db.Pool)
}

func TestUndecidableRequestsAreMarkedInvalid(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 4, 10)
	other := testkit.CreateEvent(t, store, 4, 10)
	wrongEvent := testkit.OrderRequest("a", "1", event, 0, 1)
	wrongEvent.CategoryID = other.Categories[0].ID
	forgedID := testkit.OrderRequest("a", "2", event, 0, 1)
	forgedID.OrderID = crowdpass.OrderID("someone-else", "2")
	zero := testkit.OrderRequest("a", "3", event, 0, 0)
	good := testkit.OrderRequest("a", "4", event, 0, 1)

	decisions, err := store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{wrongEvent, forgedID, zero, good})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range decisions[:3] {
		if d.Invalid == nil || d.Order != nil {
			t.Errorf("request %d: decision %+v, want invalid", i, d)
		}
	}
	if decisions[3].Order == nil || decisions[3].Order.Status != crowdpass.StatusConfirmed {
		t.Errorf("the valid request was not confirmed: %+v", decisions[3])
	}
	testkit.CheckInvariants(t, db.Pool)
}

func TestOutboxPayloadIsTheOutcome(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 4, 1)
	reqs := []crowdpass.OrderRequest{
		testkit.OrderRequest("alice", "1", event, 0, 1),
		testkit.OrderRequest("bob", "1", event, 0, 1),
	}
	decisions, err := store.DecideOrders(testkit.Context(t), reqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range decisions {
		var typ string
		var out crowdpass.Outcome
		err := db.Pool.QueryRow(testkit.Context(t),
			"SELECT event_type, payload FROM outbox WHERE aggregate_type = 'order' AND aggregate_id = $1", d.Request.OrderID).Scan(&typ, &out)
		if err != nil {
			t.Fatal(err)
		}
		if typ != out.Type || out.CustomerID != d.Request.CustomerID || out.Status != d.Order.Status ||
			out.ProcessedAt.String() != d.Order.ProcessedAt.String() || len(out.Tickets) != len(d.Order.Tickets) {
			t.Errorf("outbox row %s %+v does not match decision %+v", typ, out, d.Order)
		}
	}
}

func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := testkit.Context(t)
	var out testkitWriter
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	for range files {
		if err := postgres.Migrate(ctx, db.Pool, "down", &out); err != nil {
			t.Fatalf("down: %v", err)
		}
	}
	var tables int
	if err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'goose_db_version'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("%d tables left after migrating all the way down", tables)
	}
	if err := postgres.Migrate(ctx, db.Pool, "up", &out); err != nil {
		t.Fatalf("up: %v", err)
	}
	if err := postgres.Migrate(ctx, db.Pool, "sideways", &out); err == nil {
		t.Error("an unknown migrate command succeeded")
	}
}

type testkitWriter struct{}

func (testkitWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestAuditFindsABrokenInvariant(t *testing.T) {
	t.Parallel()
	db, store := setup(t)
	event := testkit.CreateEvent(t, store, 4, 10)
	if _, err := store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{testkit.OrderRequest("a", "k", event, 0, 2)}); err != nil {
		t.Fatal(err)
	}
	count := func(name string) int64 {
		vs, err := store.Audit(testkit.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if v.Invariant == name {
				return v.Count
			}
		}
		t.Fatalf("no invariant %q", name)
		return 0
	}
	if n := count("capacity - remaining = ticket rows"); n != 0 {
		t.Fatalf("violated before the break: %d", n)
	}
	// A ticket sold behind the database's back.
	if _, err := db.Pool.Exec(testkit.Context(t), "UPDATE ticket_categories SET remaining = remaining - 1"); err != nil {
		t.Fatal(err)
	}
	if n := count("capacity - remaining = ticket rows"); n != 1 {
		t.Errorf("audit counted %d violations of a broken invariant, want 1", n)
	}
	if n := count("every outbox row published"); n != 1 {
		t.Errorf("unpublished outbox rows = %d, want 1", n)
	}
}
