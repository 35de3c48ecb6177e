package api

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
)

// Outcomes from other processes, however many, never push out the orders
// this process accepted: it owes their 202s to its own buyers.
func TestDecidedOrdersDoNotPushOutOwnOnes(t *testing.T) {
	r := NewRecent(4)
	own := uuid.New()
	r.add(own, crowdpass.KeyRecord{CustomerID: "alice", Answer: crowdpass.Answer{Status: 202, Body: []byte("own\n")}})
	for range 100 {
		r.Decided(crowdpass.Outcome{CustomerID: "bob", Order: crowdpass.Order{ID: uuid.New(), Quantity: 1}})
	}
	rec, err := r.Pending(nil).Lookup(context.Background(), own)
	if err != nil || string(rec.Answer.Body) != "own\n" {
		t.Errorf("own order after 100 decided elsewhere: %+v, %v", rec, err)
	}
	// An outcome of an order accepted here leaves its 202 as it was given.
	r.Decided(crowdpass.Outcome{CustomerID: "alice", Order: crowdpass.Order{ID: own, Quantity: 1}})
	if rec, _ := r.get(own); string(rec.Answer.Body) != "own\n" {
		t.Errorf("own 202 replaced by its outcome's: %s", rec.Answer.Body)
	}
}

// A refusal is remembered by its key with its answer, and the answers are
// kept once however many keys share them.
func TestRefusalsShareTheirAnswers(t *testing.T) {
	r := NewRecent(4)
	soldOut := crowdpass.Answer{Status: 409, Body: []byte(`{"code":"sold_out"}` + "\n")}
	ids := make([]uuid.UUID, 10)
	for i := range ids {
		ids[i] = uuid.New()
		r.refuse(ids[i], "fp1", soldOut)
	}
	r.refuse(uuid.New(), "fp2", soldOut)
	if n := len(r.refused.answers); n != 2 {
		t.Errorf("%d answers kept for two fingerprints", n)
	}
	fp, answer, ok := r.refusal(ids[9])
	if !ok || fp != "fp1" || answer.Status != 409 || string(answer.Body) != string(soldOut.Body) {
		t.Errorf("refusal = %q %+v %v", fp, answer, ok)
	}
	if _, _, ok := r.refusal(uuid.New()); ok {
		t.Error("an unknown key found refused")
	}
}

// The answers written back after Redis lost its keys put first the 202s of
// orders still in the queue, which no other process knows of.
func TestUndecidedOrdersAreWrittenBackFirst(t *testing.T) {
	r := NewRecent(16)
	accepted := func(customer string) uuid.UUID {
		id := uuid.New()
		r.queue(id, uuid.Nil, 1, time.Now(), true)
		r.add(id, crowdpass.KeyRecord{CustomerID: customer, Fingerprint: "fp", Answer: crowdpass.Answer{Status: 202, Body: []byte(customer)}})
		return id
	}
	decided := accepted("decided")
	r.Decided(crowdpass.Outcome{CustomerID: "decided", Order: crowdpass.Order{ID: decided, Quantity: 1}})
	queued := accepted("queued")
	refused := uuid.New()
	r.refuse(refused, "fp", crowdpass.Answer{Status: 409, Body: []byte("sold_out")})
	var got []uuid.UUID
	for _, a := range r.answers() {
		got = append(got, a.OrderID)
	}
	if len(got) != 3 || got[0] != queued || got[1] != decided || got[2] != refused {
		t.Errorf("written back in the order %v, want queued %v, decided %v, refused %v", got, queued, decided, refused)
	}
}

// The cost a sold-out answer pays to be remembered.
//
//	go test -run '^$' -bench Refuse ./api/
func BenchmarkRefuse(b *testing.B) {
	r := NewRecent(0)
	soldOut := crowdpass.Answer{Status: 409, Body: []byte(`{"type":"urn:crowdpass:problem:sold_out","title":"Sold out","status":409,"detail":"not enough tickets left in the category","code":"sold_out"}` + "\n")}
	ids := make([]uuid.UUID, 1<<20)
	for i := range ids {
		ids[i] = uuid.New()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			id := ids[i&(len(ids)-1)]
			i += 7919
			r.refusal(id)
			r.refuse(id, "fp", soldOut)
		}
	})
}
