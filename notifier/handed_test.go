package notifier

import "testing"

func TestHandedOverForgetsATakenIdAndTheOldestGeneration(t *testing.T) {
	h := handedOver{size: 2}
	for id := int64(1); id <= 4; id++ {
		h.add(id) // 1 and 2 fill a generation, 3 and 4 the next
	}
	if !h.take(2) {
		t.Error("id 2 not held")
	}
	if h.take(2) {
		t.Error("id 2 held after it was taken")
	}
	h.add(5) // 3 and 4's generation is full: 1's goes
	if h.take(1) {
		t.Error("id 1 outlived two generations")
	}
	for _, id := range []int64{3, 4, 5} {
		if !h.take(id) {
			t.Errorf("id %d of the last two generations forgotten", id)
		}
	}
}
