package gate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/gate"
	"github.com/crowdpass/crowdpass/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T) *gate.Redis {
	t.Helper()
	return setupInFlight(t, time.Minute)
}

// setupInFlight returns a gate whose keys stay in flight for ttl.
func setupInFlight(t *testing.T, ttl time.Duration) *gate.Redis {
	t.Helper()
	g, _ := setupNamespace(t, ttl)
	return g
}

// setupNamespace returns a gate whose keys stay in flight for ttl, and its
// namespace (see setupConfig).
func setupNamespace(t *testing.T, ttl time.Duration) (*gate.Redis, string) {
	t.Helper()
	return setupConfig(t, gate.Config{InFlightTTL: ttl})
}

// setupConfig returns a gate configured by cfg in a namespace of its own,
// and the namespace. Its epoch is one that recovered long ago, as in a
// deployment that has run a while; a namespace without one would recover
// for its first second (epoch.lua).
func setupConfig(t *testing.T, cfg gate.Config) (*gate.Redis, string) {
	t.Helper()
	rdb := newClient(t)
	cfg.Namespace = testkit.Namespace(t)
	g := gate.New(rdb, cfg)
	t.Cleanup(g.Close)
	if err := rdb.Set(testkit.Context(t), cfg.Namespace+"gate:epoch", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	return g, cfg.Namespace
}

// newClient connects to the tests' Redis until the test ends.
func newClient(t *testing.T) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(testkit.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// withStock gives a new category a gate stock of n on g.
func withStock(t *testing.T, g *gate.Redis, n int) (context.Context, uuid.UUID) {
	t.Helper()
	ctx, cat := testkit.Context(t), uuid.New()
	if set, err := g.SetStock(ctx, cat, 0, false, n); err != nil || !set {
		t.Fatalf("SetStock = %v, %v", set, err)
	}
	return ctx, cat
}

func admission(customer, key string, category uuid.UUID, quantity int) crowdpass.Admission {
	p := crowdpass.OrderPayload{EventID: category, CategoryID: category, Quantity: quantity}
	return crowdpass.Admission{
		OrderID: crowdpass.OrderID(customer, key), CustomerID: customer, Fingerprint: p.Fingerprint(),
		CategoryID: category, Quantity: quantity,
		SoldOut:    crowdpass.Answer{Status: 409, Body: []byte(`{"code":"sold_out"}`)},
		AcceptedAt: crowdpass.NewTime(time.Now()),
	}
}

func TestAdmitDecidesEachKeyOnce(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 3)
	a := admission("alice", "k", cat, 2)
	verdict := func(a crowdpass.Admission, owner string) crowdpass.AdmissionResult {
		t.Helper()
		r, err := g.Admit(ctx, a, owner)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := verdict(a, "o1"); r.Verdict != crowdpass.Admitted || r.Taken != 2 {
		t.Fatalf("first admission %+v", r)
	}
	if r := verdict(a, "o2"); r.Verdict != crowdpass.InProgress {
		t.Errorf("same key in flight: %+v", r)
	}
	other := admission("alice", "k", cat, 1)
	if r := verdict(other, "o3"); r.Verdict != crowdpass.Mismatch {
		t.Errorf("other payload in flight: %+v", r)
	}
	answer := crowdpass.Answer{Status: 202, Body: []byte(`{"order_id":"x"}`)}
	if err := g.Complete(ctx, a, answer); err != nil {
		t.Fatal(err)
	}
	if r := verdict(a, "o4"); r.Verdict != crowdpass.Replay || string(r.Answer.Body) != string(answer.Body) || r.Answer.Status != 202 {
		t.Errorf("replay %+v", r)
	}
	// One ticket left: two are sold out, and the answer is stored.
	b := admission("bob", "k", cat, 2)
	if r := verdict(b, "o5"); r.Verdict != crowdpass.SoldOut {
		t.Fatalf("over the stock: %+v", r)
	}
	if r := verdict(b, "o6"); r.Verdict != crowdpass.Replay || r.Answer.Status != 409 {
		t.Errorf("sold-out replay %+v", r)
	}
	if n, known, _ := g.Stock(ctx, cat); !known || n != 1 {
		t.Errorf("stock %d (known %v), want 1", n, known)
	}
}

func TestAMissingStockKeyAdmitsWithoutTaking(t *testing.T) {
	t.Parallel()
	g := setup(t)
	r, err := g.Admit(testkit.Context(t), admission("alice", "k", uuid.New(), 4), "o")
	if err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 0 {
		t.Errorf("unknown stock: %+v, %v", r, err)
	}
}

// A stock key Redis lost starts again from the catalog's remaining, sent
// with the admission, rather than admitting blind.
func TestAMissingStockKeyStartsFromTheCatalogsRemaining(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := testkit.Context(t), uuid.New()
	a := admission("alice", "k", cat, 1)
	a.Remaining, a.RemainingKnown = 1, true
	if r, err := g.Admit(ctx, a, "o"); err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 1 {
		t.Fatalf("first admission after the loss: %+v, %v; want the ticket taken", r, err)
	}
	b := admission("bob", "k", cat, 1)
	b.Remaining, b.RemainingKnown = 1, true // the catalog has not read the sale yet
	if r, err := g.Admit(ctx, b, "o"); err != nil || r.Verdict != crowdpass.SoldOut {
		t.Errorf("second admission: %+v, %v; want sold out from the restarted stock", r, err)
	}
}

// An admission that asks is told the stock is missing, and changes nothing;
// a known key is answered as ever.
func TestAMissingStockKeyIsToldToAnAdmissionThatAsks(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := testkit.Context(t), uuid.New()
	a := admission("alice", "k", cat, 1)
	a.AskStock, a.Remaining, a.RemainingKnown = true, 1, true
	if r, err := g.Admit(ctx, a, "o"); err != nil || r.Verdict != crowdpass.StockUnknown {
		t.Fatalf("asking admission: %+v, %v; want StockUnknown", r, err)
	}
	if _, known, err := g.Stock(ctx, cat); err != nil || known {
		t.Fatalf("stock after asking: known %v, %v; want still missing", known, err)
	}
	if _, err := g.Lookup(ctx, a.OrderID); !errors.Is(err, crowdpass.ErrNotFound) {
		t.Fatalf("alice's key after asking: %v; want no record", err)
	}
	if ok, err := g.SetStock(ctx, cat, 0, false, 1); err != nil || !ok {
		t.Fatalf("rebuilding the stock: %v, %v", ok, err)
	}
	if r, err := g.Admit(ctx, a, "o"); err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 1 {
		t.Fatalf("asking again: %+v, %v; want the ticket taken", r, err)
	}
}

func TestAbortGivesBackOnlyItsOwnAdmission(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 5)
	a := admission("alice", "k", cat, 2)
	if _, err := g.Admit(ctx, a, "mine"); err != nil {
		t.Fatal(err)
	}
	// Another attempt's abort must not clear this attempt's mark.
	if err := g.Abort(ctx, a, "someone-else", crowdpass.AdmissionResult{Verdict: crowdpass.Admitted}); err != nil {
		t.Fatal(err)
	}
	if r, _ := g.Admit(ctx, a, "again"); r.Verdict != crowdpass.InProgress {
		t.Errorf("mark cleared by a foreign abort: %+v", r)
	}
	if err := g.Abort(ctx, a, "mine", crowdpass.AdmissionResult{Verdict: crowdpass.Admitted, Taken: 2}); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := g.Stock(ctx, cat); n != 5 {
		t.Errorf("stock after abort %d, want 5", n)
	}
	// A fresh attempt's abort frees the key: nothing was created, so the
	// retry is a new admission, with its own time.
	a.AcceptedAt = crowdpass.NewTime(a.AcceptedAt.Add(time.Second))
	if r, _ := g.Admit(ctx, a, "retry"); r.Verdict != crowdpass.Admitted || r.Taken != 2 || r.TookOver || !r.AcceptedAt.IsZero() {
		t.Errorf("retry after abort: %+v", r)
	}
}

func TestSetStockIsACompareAndSet(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx := testkit.Context(t)
	cat := uuid.New()
	if set, _ := g.SetStock(ctx, cat, 0, false, 10); !set {
		t.Fatal("setting a missing key failed")
	}
	if set, _ := g.SetStock(ctx, cat, 0, false, 20); set {
		t.Error("set a key that exists as if it were missing")
	}
	if set, _ := g.SetStock(ctx, cat, 9, true, 20); set {
		t.Error("set over a value the caller did not see")
	}
	if set, _ := g.SetStock(ctx, cat, 10, true, 7); !set {
		t.Error("compare-and-set with the right value failed")
	}
	if n, _, _ := g.Stock(ctx, cat); n != 7 {
		t.Errorf("stock %d, want 7", n)
	}
}

func TestRefuseStoresSoldOutOnlyForNewKeys(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 1)
	refuse := func(a crowdpass.Admission) crowdpass.AdmissionResult {
		t.Helper()
		r, err := g.Refuse(ctx, a, "refuser")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	fresh := admission("alice", "new", cat, 2)
	if r := refuse(fresh); r.Verdict != crowdpass.SoldOut || string(r.Answer.Body) != string(fresh.SoldOut.Body) {
		t.Errorf("new key over the stock: %+v", r)
	}
	if r, _ := g.Admit(ctx, fresh, "o"); r.Verdict != crowdpass.Replay || r.Answer.Status != 409 || string(r.Answer.Body) != string(fresh.SoldOut.Body) {
		t.Errorf("Admit after Refuse: %+v", r)
	}
	if r := refuse(admission("alice", "new", cat, 1)); r.Verdict != crowdpass.Mismatch {
		t.Errorf("other payload under a refused key: %+v", r)
	}

	flying := admission("bob", "k", cat, 1)
	if r, _ := g.Admit(ctx, flying, "o"); r.Verdict != crowdpass.Admitted {
		t.Fatalf("admission: %+v", r)
	}
	if r := refuse(flying); r.Verdict != crowdpass.InProgress {
		t.Errorf("key in flight: %+v", r)
	}
	accepted := crowdpass.Answer{Status: 202, Body: []byte(`{"order_id":"b"}` + "\n")}
	if err := g.Complete(ctx, flying, accepted); err != nil {
		t.Fatal(err)
	}
	if r := refuse(flying); r.Verdict != crowdpass.Replay || r.Answer.Status != 202 || string(r.Answer.Body) != string(accepted.Body) {
		t.Errorf("accepted key: %+v, want its 202 replayed", r)
	}
	if n, _, _ := g.Stock(ctx, cat); n != 0 {
		t.Errorf("stock %d, want 0: Refuse must not touch it", n)
	}
	rec, err := g.Lookup(ctx, flying.OrderID)
	if err != nil || rec.CustomerID != "bob" || rec.InFlight || rec.Answer.Status != 202 {
		t.Errorf("Lookup = %+v, %v", rec, err)
	}
}

// Refuse never looks at the stock: the caller decided it is short.
func TestRefuseLeavesTheStockAlone(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 3)
	if r, err := g.Refuse(ctx, admission("bob", "k", cat, 2), "o"); err != nil || r.Verdict != crowdpass.SoldOut {
		t.Errorf("Refuse = %+v, %v; want SoldOut", r, err)
	}
	if n, _, _ := g.Stock(ctx, cat); n != 3 {
		t.Errorf("stock %d, want 3", n)
	}
}

func TestSoldOutReportsTheStockItSaw(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 1)
	r, err := g.Admit(ctx, admission("alice", "k", cat, 2), "o")
	if err != nil || r.Verdict != crowdpass.SoldOut || !r.StockKnown || r.Stock != 1 {
		t.Errorf("Admit over the stock = %+v, %v; want SoldOut seeing 1", r, err)
	}
}

// A key whose attempt died before answering stays in flight for
// InFlightTTL; after that a retry takes it over and is admitted again
// without taking stock, even with none left, and with the dead attempt's
// acceptance time: the dead attempt's order may be queued, with that time,
// and its key must not be answered sold_out.
func TestAnAttemptThatDiedIsTakenOverAfterItsTime(t *testing.T) {
	t.Parallel()
	g := setupInFlight(t, time.Second)
	ctx, cat := withStock(t, g, 1)
	a := admission("alice\nsmith", "k", cat, 1) // a newline in the customer: the scripts count its bytes
	dead := a.AcceptedAt
	if r, err := g.Admit(ctx, a, "dead"); err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 1 || r.TookOver || !r.AcceptedAt.IsZero() {
		t.Fatalf("first admission %+v, %v", r, err)
	}
	a.AcceptedAt = crowdpass.NewTime(dead.Add(time.Minute)) // each retry's own time
	if r, err := g.Admit(ctx, a, "early"); err != nil || r.Verdict != crowdpass.InProgress {
		t.Fatalf("retry within the attempt's time: %+v, %v", r, err)
	}
	if r, err := g.Refuse(ctx, a, "early"); err != nil || r.Verdict != crowdpass.InProgress {
		t.Fatalf("refusal within the attempt's time: %+v, %v", r, err)
	}
	var took crowdpass.AdmissionResult
	testkit.Eventually(t, 10*time.Second, func() bool {
		r, err := g.Refuse(ctx, a, "late")
		if err != nil {
			t.Fatal(err)
		}
		took = r
		return r.Verdict != crowdpass.InProgress
	}, "the key taken over")
	if took.Verdict != crowdpass.Admitted || took.Taken != 0 || !took.TookOver || !took.AcceptedAt.Equal(dead.Time) {
		t.Fatalf("retry after the attempt's time: %+v, want admitted without stock, accepted at %v", took, dead)
	}
	if n, _, _ := g.Stock(ctx, cat); n != 0 {
		t.Errorf("stock %d after the takeover, want 0", n)
	}
	// The new attempt owns the key, but not the dead one's order: if its
	// own publish fails, its abort leaves the mark for the next retry to take
	// over at once, with the dead attempt's time, still never sold_out.
	if err := g.Abort(ctx, a, "late", took); err != nil {
		t.Fatal(err)
	}
	a.AcceptedAt = crowdpass.NewTime(dead.Add(2 * time.Minute))
	if r, err := g.Admit(ctx, a, "after"); err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 0 || !r.TookOver || !r.AcceptedAt.Equal(dead.Time) {
		t.Errorf("admission after the takeover's abort: %+v, %v; want admitted without stock, accepted at %v", r, err, dead)
	}
}

// A key in flight stays in progress while its attempt's process lives (its
// live mark, which its admissions and KeepAlive renew), and is taken
// over as soon as that mark is gone, long before InFlightTTL: the process
// died, and its attempt cannot be publishing any more.
func TestAKeyInFlightOfAProcessThatDiedIsTakenOverAtOnce(t *testing.T) {
	t.Parallel()
	rdb, ns := newClient(t), testkit.Namespace(t)
	gateLiving := func(live time.Duration) *gate.Redis {
		g := gate.New(rdb, gate.Config{Namespace: ns, InFlightTTL: time.Hour, LiveTTL: live})
		t.Cleanup(g.Close)
		return g
	}
	long, short := gateLiving(time.Hour), gateLiving(200*time.Millisecond)
	ctx, cat := withStock(t, long, 3)
	admit := func(g *gate.Redis, customer, owner string) crowdpass.Admission {
		t.Helper()
		a := admission(customer, "k", cat, 1)
		if r, err := g.Admit(ctx, a, owner); err != nil || r.Verdict != crowdpass.Admitted || r.Taken != 1 {
			t.Fatalf("%s's admission by %s: %+v, %v", customer, owner, r, err)
		}
		return a
	}
	retry := func(a crowdpass.Admission) crowdpass.AdmissionResult {
		t.Helper()
		a.AcceptedAt = crowdpass.NewTime(a.AcceptedAt.Add(time.Minute)) // the retry's own time
		r, err := long.Refuse(ctx, a, "retrier.1")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	living := admit(long, "alice", "p1.a")
	if r := retry(living); r.Verdict != crowdpass.InProgress {
		t.Errorf("retry of a living process's key: %+v, want in progress", r)
	}

	// p2's mark lasts 200 ms after its admission, and nothing renews it.
	dead := admit(short, "bob", "p2.a")
	var took crowdpass.AdmissionResult
	testkit.Eventually(t, 10*time.Second, func() bool {
		took = retry(dead)
		return took.Verdict != crowdpass.InProgress
	}, "the dead process's key taken over")
	if took.Verdict != crowdpass.Admitted || took.Taken != 0 || !took.TookOver || !took.AcceptedAt.Equal(dead.AcceptedAt.Time) {
		t.Errorf("retry of a dead process's key: %+v, want admitted without stock, accepted at %v", took, dead.AcceptedAt)
	}

	// The dead attempt's publish fails after all: its tickets stay taken,
	// for the order the takeover queued, which holds none of its own.
	if err := short.Abort(ctx, dead, "p2.a", crowdpass.AdmissionResult{Verdict: crowdpass.Admitted, Taken: 1}); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := short.Stock(ctx, cat); n != 1 {
		t.Errorf("stock %d after the dead attempt's abort, want 1: its ticket stays with the order taken over", n)
	}

	// p3's mark is gone too, but KeepAlive renews it.
	renewed := admit(short, "carol", "p3.a")
	testkit.Eventually(t, 10*time.Second, func() bool {
		n, err := rdb.Exists(ctx, ns+"gate:live:p3").Result()
		return err == nil && n == 0
	}, "p3's live mark expired")
	if err := long.KeepAlive(ctx, "p3"); err != nil {
		t.Fatal(err)
	}
	if r := retry(renewed); r.Verdict != crowdpass.InProgress {
		t.Errorf("retry of a key whose process checked its canary: %+v, want in progress", r)
	}
}

// Remember writes the 202 a process gave a key back where Redis lost it:
// over no record, an in-flight mark or a sold_out of the same payload, and
// never over a stored 202 or another payload's record.
func TestRememberRestoresA202WhereRedisLostIt(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 10)
	ours := crowdpass.Answer{Status: 202, Body: []byte(`{"ours":true}`)}
	remember := func(a crowdpass.Admission, rec crowdpass.KeyRecord) (crowdpass.AdmissionResult, bool) {
		t.Helper()
		res, stored, err := g.Remember(ctx, a, rec)
		if err != nil {
			t.Fatal(err)
		}
		return res, stored
	}
	for name, prepare := range map[string]func(a crowdpass.Admission){
		"no record":             func(crowdpass.Admission) {},
		"an in-flight mark":     func(a crowdpass.Admission) { g.Admit(ctx, a, "elsewhere") },
		"a sold_out of its own": func(a crowdpass.Admission) { g.Refuse(ctx, a, "elsewhere") },
	} {
		a := admission("alice", name, cat, 1)
		prepare(a)
		rec := crowdpass.KeyRecord{CustomerID: "alice", Fingerprint: a.Fingerprint, Answer: ours}
		if res, stored := remember(a, rec); !stored || res.Verdict != crowdpass.Replay || string(res.Answer.Body) != string(ours.Body) {
			t.Errorf("over %s: stored %v, %+v", name, stored, res)
		}
		if res, stored := remember(a, rec); stored || res.Verdict != crowdpass.Replay || string(res.Answer.Body) != string(ours.Body) {
			t.Errorf("over %s, again: stored %v, %+v", name, stored, res)
		}
		other := admission("alice", name, cat, 2) // the same key, another payload
		if res, stored := remember(other, rec); stored || res.Verdict != crowdpass.Mismatch {
			t.Errorf("another payload after %s: stored %v, %+v", name, stored, res)
		}
	}

	// Records that stand, as the key's first or its own payload finds them.
	theirs := crowdpass.Answer{Status: 202, Body: []byte(`{"theirs":true}`)}
	for _, c := range []struct {
		name          string
		theirQuantity int
		prepare       func(their crowdpass.Admission) error
		theyAsk       bool // the asker sends their payload, else ours
		want          crowdpass.Verdict
	}{
		{"a 202 stored elsewhere", 1, func(a crowdpass.Admission) error {
			if _, err := g.Admit(ctx, a, "elsewhere"); err != nil {
				return err
			}
			return g.Complete(ctx, a, theirs)
		}, false, crowdpass.Replay},
		{"another payload in flight", 2, func(a crowdpass.Admission) error { _, err := g.Admit(ctx, a, "elsewhere"); return err }, true, crowdpass.InProgress},
		{"another payload's sold_out", 2, func(a crowdpass.Admission) error { _, err := g.Refuse(ctx, a, "elsewhere"); return err }, false, crowdpass.Mismatch},
	} {
		their, ours1 := admission("alice", c.name, cat, c.theirQuantity), admission("alice", c.name, cat, 1)
		if err := c.prepare(their); err != nil {
			t.Fatal(err)
		}
		asker := ours1
		if c.theyAsk {
			asker = their
		}
		res, stored := remember(asker, crowdpass.KeyRecord{CustomerID: "alice", Fingerprint: ours1.Fingerprint, Answer: ours})
		if stored || res.Verdict != c.want || (c.want == crowdpass.Replay && string(res.Answer.Body) != string(theirs.Body)) {
			t.Errorf("over %s: stored %v, %+v", c.name, stored, res)
		}
	}

	// The 202 of a decided order, rebuilt from the order, takes the place of
	// another 202 of its payload (given while no process knew the order).
	a := admission("alice", "decided", cat, 1)
	if _, err := g.Admit(ctx, a, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if err := g.Complete(ctx, a, theirs); err != nil {
		t.Fatal(err)
	}
	decided := crowdpass.KeyRecord{CustomerID: "alice", Fingerprint: a.Fingerprint, Answer: ours, FromOrder: true}
	if res, stored := remember(a, decided); !stored || res.Verdict != crowdpass.Replay || string(res.Answer.Body) != string(ours.Body) {
		t.Errorf("the decided order's 202 over another: stored %v, %+v; want it stored and replayed", stored, res)
	}
	if res, stored := remember(a, decided); stored || string(res.Answer.Body) != string(ours.Body) {
		t.Errorf("the decided order's 202 again: stored %v, %+v; want it standing", stored, res)
	}
}

func TestRestoreWritesBackAnswersAsRememberWould(t *testing.T) {
	t.Parallel()
	g := setup(t)
	ctx, cat := withStock(t, g, 10)
	ours := crowdpass.Answer{Status: 202, Body: []byte(`{"ours":true}`)}
	soldOut := crowdpass.Answer{Status: 409, Body: []byte(`{"code":"sold_out"}`)}
	answer := func(a crowdpass.Admission, ans crowdpass.Answer) crowdpass.KeyAnswer {
		return crowdpass.KeyAnswer{OrderID: a.OrderID, CustomerID: a.CustomerID, Fingerprint: a.Fingerprint, Answer: ans}
	}
	lost := admission("alice", "lost", cat, 1)             // a 202 Redis lost: restored
	retried := admission("alice", "retried", cat, 1)       // a 202 whose retry is in flight elsewhere: restored
	refused := admission("alice", "refused", cat, 1)       // a refusal Redis lost: restored
	readmitted := admission("alice", "readmitted", cat, 1) // a refusal admitted anew since: stands
	if _, err := g.Admit(ctx, retried, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(ctx, readmitted, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	answers := []crowdpass.KeyAnswer{answer(lost, ours), answer(retried, ours), answer(refused, soldOut), answer(readmitted, soldOut)}
	// More than one pipeline's worth.
	for i := range 600 {
		answers = append(answers, answer(admission("bob", fmt.Sprint(i), cat, 1), soldOut))
	}
	stored, err := g.Restore(ctx, answers)
	if err != nil || stored != 603 {
		t.Fatalf("Restore = %d, %v; want 603 stored", stored, err)
	}
	for _, c := range []struct {
		a    crowdpass.Admission
		want crowdpass.AdmissionResult
	}{
		{lost, crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: ours}},
		{retried, crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: ours}},
		{refused, crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: soldOut}},
		{readmitted, crowdpass.AdmissionResult{Verdict: crowdpass.InProgress}},
	} {
		res, err := g.Admit(ctx, c.a, "a retry")
		if err != nil || res.Verdict != c.want.Verdict || string(res.Answer.Body) != string(c.want.Answer.Body) {
			t.Errorf("%s: %+v, %v; want %+v", c.a.OrderID, res, err, c.want)
		}
	}
	if stored, err := g.Restore(ctx, answers); err != nil || stored != 0 {
		t.Errorf("Restore again = %d, %v; want nothing stored", stored, err)
	}
}

// Once Redis has lost its keys, answers given anew are marked as given
// during the recovery, until it ends; a refusal written back during it
// takes the place of an admission given anew (whose process looks at the
// key again before it queues the order), but not of one given after it.
func TestAnswersGivenWhileRedisRecoversAreMarked(t *testing.T) {
	t.Parallel()
	g, ns := setupConfig(t, gate.Config{InFlightTTL: time.Minute, Recovery: 300 * time.Millisecond})
	ctx, cat := withStock(t, g, 10)
	soldOut := crowdpass.Answer{Status: 409, Body: []byte(`{"code":"sold_out"}`)}
	refusal := func(a crowdpass.Admission) []crowdpass.KeyAnswer {
		return []crowdpass.KeyAnswer{{OrderID: a.OrderID, CustomerID: a.CustomerID, Fingerprint: a.Fingerprint, Answer: soldOut}}
	}
	if res, err := g.Admit(ctx, admission("alice", "before", cat, 1), "p.1"); err != nil || !res.Recovering.IsZero() {
		t.Fatalf("an admission before the loss: %+v, %v; want no recovery", res, err)
	}

	if err := testkit.DeleteRedisKeys(ctx, ns); err != nil {
		t.Fatal(err)
	}
	during := admission("alice", "during", cat, 1)
	res, err := g.Admit(ctx, during, "p.2")
	if err != nil || res.Verdict != crowdpass.Admitted || res.Recovering.IsZero() || time.Until(res.Recovering) > 300*time.Millisecond {
		t.Fatalf("an admission after the loss: %+v, %v; want admitted, recovering for 300 ms at most", res, err)
	}
	// A retry elsewhere meets the admission in flight: it is told to look
	// again after the recovery, as the admission may give way.
	if res, err := g.Admit(ctx, during, "p.7"); err != nil || res.Verdict != crowdpass.InProgress || res.Recovering.IsZero() {
		t.Errorf("a retry of the admission given anew: %+v, %v; want in progress, recovering", res, err)
	}
	bob := admission("bob", "during", cat, 1)
	refused, err := g.Refuse(ctx, bob, "p.3")
	if err != nil || refused.Verdict != crowdpass.SoldOut || refused.Recovering.IsZero() {
		t.Errorf("a refusal after the loss: %+v, %v; want sold_out, recovering", refused, err)
	}
	if rec, err := g.Lookup(ctx, bob.OrderID); err != nil || rec.WrittenBack {
		t.Errorf("the refusal given anew: %+v, %v; want it not marked written back", rec, err)
	}
	// A retry of it elsewhere is told to look again after the recovery: the
	// refusal may yet give way to an answer written back.
	if res, err := g.Refuse(ctx, bob, "p.5"); err != nil || res.Verdict != crowdpass.Replay || res.Recovering.IsZero() {
		t.Errorf("a retry of the refusal given anew: %+v, %v; want a replay, recovering", res, err)
	}
	if stored, err := g.Restore(ctx, append(refusal(during), refusal(bob)...)); err != nil || stored != 2 {
		t.Fatalf("Restore of refusals during the recovery = %d, %v; want both stored, over the admission and the same refusal", stored, err)
	}
	if rec, err := g.Lookup(ctx, during.OrderID); err != nil || rec.InFlight || rec.Answer.Status != 409 {
		t.Errorf("the admitted key after the write-back: %+v, %v; want the refusal", rec, err)
	}
	if rec, err := g.Lookup(ctx, bob.OrderID); err != nil || !rec.WrittenBack || rec.CustomerID != "bob" || rec.Answer.Status != 409 {
		t.Errorf("the refused key after the write-back: %+v, %v; want bob's refusal, marked written back", rec, err)
	}
	if stored, err := g.Restore(ctx, refusal(bob)); err != nil || stored != 0 {
		t.Errorf("Restore of the same refusal again = %d, %v; want nothing stored", stored, err)
	}
	if res, err := g.Admit(ctx, bob, "p.6"); err != nil || res.Verdict != crowdpass.Replay || !res.Recovering.IsZero() {
		t.Errorf("a retry of the refusal written back: %+v, %v; want a replay, final", res, err)
	}

	var after crowdpass.Admission
	attempt := 0
	testkit.Eventually(t, 10*time.Second, func() bool {
		attempt++
		after = admission("alice", fmt.Sprint("after-", attempt), cat, 1)
		res, err := g.Admit(ctx, after, "p.4")
		return err == nil && res.Verdict == crowdpass.Admitted && res.Recovering.IsZero()
	}, "an admission after the recovery not marked")
	if stored, err := g.Restore(ctx, refusal(after)); err != nil || stored != 0 {
		t.Errorf("Restore of a refusal after the recovery = %d, %v; want the admission standing", stored, err)
	}
}

// Where only the epoch is lost (an eviction), the recovery it begins
// lets a refusal written back replace no admission made before it: its
// order may be queued.
func TestAnAdmissionMadeBeforeARecoveryStands(t *testing.T) {
	t.Parallel()
	g, ns := setupConfig(t, gate.Config{InFlightTTL: time.Minute, Recovery: time.Minute})
	ctx, cat := withStock(t, g, 10)
	// Its mark tells the gate that writes back (its in-flight TTL half a
	// minute longer) that it was made half a minute before it was.
	earlier := gate.New(newClient(t), gate.Config{Namespace: ns, InFlightTTL: time.Minute - time.Minute/2})
	t.Cleanup(earlier.Close)
	before := admission("alice", "before", cat, 1)
	if res, err := earlier.Admit(ctx, before, "p.1"); err != nil || res.Verdict != crowdpass.Admitted || !res.Recovering.IsZero() {
		t.Fatalf("an admission before the loss: %+v, %v", res, err)
	}
	if err := newClient(t).Del(ctx, ns+"gate:epoch").Err(); err != nil {
		t.Fatal(err)
	}
	during := admission("alice", "during", cat, 1)
	if res, err := g.Admit(ctx, during, "p.2"); err != nil || res.Recovering.IsZero() {
		t.Fatalf("an admission after the epoch's loss: %+v, %v; want it recovering", res, err)
	}
	soldOut := crowdpass.Answer{Status: 409, Body: []byte(`{"code":"sold_out"}`)}
	answers := []crowdpass.KeyAnswer{
		{OrderID: before.OrderID, CustomerID: "alice", Fingerprint: before.Fingerprint, Answer: soldOut},
		{OrderID: during.OrderID, CustomerID: "alice", Fingerprint: during.Fingerprint, Answer: soldOut},
	}
	if stored, err := g.Restore(ctx, answers); err != nil || stored != 1 {
		t.Fatalf("Restore = %d, %v; want the admission made during the recovery alone replaced", stored, err)
	}
	if rec, err := g.Lookup(ctx, before.OrderID); err != nil || !rec.InFlight {
		t.Errorf("the admission made before the recovery: %+v, %v; want it standing", rec, err)
	}
}

func TestLostTellsWhenRedisLostTheCanary(t *testing.T) {
	t.Parallel()
	g, ns := setupNamespace(t, time.Minute)
	ctx := testkit.Context(t)
	check := func(want bool) {
		t.Helper()
		if lost, err := g.Lost(ctx, "p1"); err != nil || lost != want {
			t.Fatalf("Lost = %v, %v; want %v", lost, err, want)
		}
	}
	check(true) // the process's first check
	check(false)
	if err := testkit.DeleteRedisKeys(ctx, ns); err != nil {
		t.Fatal(err)
	}
	check(true)
	check(false)
}
