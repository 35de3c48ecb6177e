package api

import (
	"context"
	"testing"

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
