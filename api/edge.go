package api

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// edgeMemory is how long a sold-out admission's view of the gate stock is
// trusted: the staleness the edge accepts in deciding sold_out.
const edgeMemory = 50 * time.Millisecond

// edgeStock remembers, per category, the gate stock an admission last found
// too low, for edgeMemory. While that view is fresh, a request it cannot
// cover goes to gate.Refuse, one SET NX GET that stores the sold-out answer
// under a new key or answers from the key's record exactly as the
// admission script would, at a quarter of the script's cost in Redis. The
// price is the staleness: stock that comes back to the gate from another
// process (an aborted admission, a reconcile), or a stock key Redis lost,
// is seen up to edgeMemory late, and requests meanwhile are answered
// sold_out as they were a moment before. This process forgets its views at
// once when it gives stock back, rebuilds a stock key, or finds Redis again.
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

// forget drops the view of one category.
func (e *edgeStock) forget(category uuid.UUID) { e.m.Delete(category) }

// forgetAll drops every view.
func (e *edgeStock) forgetAll() { e.m.Clear() }
