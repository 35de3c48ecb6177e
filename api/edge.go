package api

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// edgeMemory is how long a sold-out admission's view of the gate stock is
// trusted without asking the gate's script again.
const edgeMemory = 250 * time.Millisecond

// edgeStock remembers, per category, the gate stock an admission last found
// too low, for edgeMemory. While that view is fresh, a request it cannot
// cover goes to gate.Refuse (one SET NX GET that stores the sold-out answer
// or finds the key's record) instead of the admission script, which costs
// Redis five times as much. Stock that comes back to the gate (an aborted
// admission, a reconcile) is seen at the latest edgeMemory later.
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
