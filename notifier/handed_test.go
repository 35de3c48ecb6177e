package notifier

import (
	"testing"

	"github.com/google/uuid"
)

func TestHandedOverHoldsEachRowOnceForTwoGenerations(t *testing.T) {
	h := newHandedOver(2)
	order := func(id int64) uuid.UUID { return uuid.UUID{byte(id)} }
	for id := int64(1); id <= 4; id++ {
		if !h.add(id, order(id)) { // 1 and 2 fill a generation, 3 and 4 the next
			t.Fatalf("row %d held before it was handed over", id)
		}
	}
	if h.add(3, order(3)) {
		t.Error("row 3 handed over twice") // a retried publish: not pushed again
	}
	if h.take(2, order(9)) {
		t.Error("row 2 taken for another order's copy")
	}
	if !h.take(2, order(2)) {
		t.Error("row 2 not held")
	}
	if h.take(2, order(2)) {
		t.Error("row 2 held after it was taken")
	}
	h.add(5, order(5)) // 3 and 4's generation is full: 1's goes
	if h.take(1, order(1)) {
		t.Error("row 1 outlived two generations")
	}
	for _, id := range []int64{3, 4, 5} {
		if !h.take(id, order(id)) {
			t.Errorf("row %d of the last two generations forgotten", id)
		}
	}
}
