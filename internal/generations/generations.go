// Package generations is a map bounded by forgetting its oldest entries in
// bulk: two generations, the older dropped whole when the newer fills. It
// holds between size and 2×size entries, with no per-entry bookkeeping, for
// memories that only need to cover "lately".
package generations

import (
	"iter"
	"maps"
)

// Map is a two-generation map. It is not safe for concurrent use: callers
// hold their own lock.
type Map[K comparable, V any] struct {
	size      int
	cur, prev map[K]V
}

// New returns a Map whose generations hold size entries each.
func New[K comparable, V any](size int) *Map[K, V] {
	return &Map[K, V]{size: max(size, 1), cur: make(map[K]V)}
}

// Get returns k's value from either generation.
func (m *Map[K, V]) Get(k K) (V, bool) {
	if v, ok := m.cur[k]; ok {
		return v, true
	}
	v, ok := m.prev[k]
	return v, ok
}

// Put sets k in the newer generation, first retiring it if it is full.
func (m *Map[K, V]) Put(k K, v V) {
	if len(m.cur) >= m.size {
		m.prev, m.cur = m.cur, make(map[K]V)
	}
	m.cur[k] = v
}

// Delete forgets k.
func (m *Map[K, V]) Delete(k K) {
	delete(m.cur, k)
	delete(m.prev, k)
}

// All yields every entry held, as Get sees it, in no order. The map must
// not change while it is ranged over.
func (m *Map[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		for k, v := range m.cur {
			if !yield(k, v) {
				return
			}
		}
		for k, v := range m.prev {
			if _, newer := m.cur[k]; newer {
				continue
			}
			if !yield(k, v) {
				return
			}
		}
	}
}

// Clone returns a copy of m, to range over once the caller's lock is
// released: a copy of the maps is much quicker than building anything from
// their entries.
func (m *Map[K, V]) Clone() *Map[K, V] {
	return &Map[K, V]{size: m.size, cur: maps.Clone(m.cur), prev: maps.Clone(m.prev)}
}
