package api

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// edgeMemory is how long a sold-out admission's view of the gate stock is
// used to pick the cheaper script.
const edgeMemory = 250 * time.Millisecond

// edgeStock remembers, per category, the gate stock an admission last found
// too low, for edgeMemory. While that view is fresh, a request it cannot
// cover goes to gate.Refuse, whose script costs Redis half of the admission
// script's: it stores the sold-out answer only if the gate stock, read in
// the same atomic step, is still too low, and admits otherwise. The view
// only picks the script; it never decides an answer.
type edgeStock struct {
	m sync.Map // uuid.UUID → edgeView
}

type edgeView struct {
	stock int
	until time.Time
}

func (e *edgeStock) observe(category uuid.UUID, stock int, now time.Time) {
	e.m.Store(category, edgeView{stock: stock, until: now.Add(edgeMemory)})
}

// short reports whether the fresh view of category cannot cover quantity.
func (e *edgeStock) short(category uuid.UUID, quantity int, now time.Time) bool {
	v, ok := e.m.Load(category)
	if !ok {
		return false
	}
	view := v.(edgeView)
	return now.Before(view.until) && quantity > view.stock
}
