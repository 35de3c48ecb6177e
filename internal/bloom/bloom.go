// Package bloom is a Bloom filter of UUIDs, safe for concurrent use: it
// says for certain that an id was never added, or that it may have been.
package bloom

import (
	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/google/uuid"
)

// Filter is a Bloom filter of UUIDs; its zero value is not usable (New).
type Filter struct {
	words  []atomic.Uint64
	mask   uint64 // the number of bits, a power of two, less one
	hashes int
	added  atomic.Int64
}

// New returns a filter that holds n ids with a false-positive rate of
// about p; past n, the rate grows.
func New(n int, p float64) *Filter {
	n = max(n, 1)
	bits := uint64(math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2)))
	size := uint64(64)
	for size < bits {
		size <<= 1
	}
	k := int(math.Round(float64(size) / float64(n) * math.Ln2))
	return &Filter{words: make([]atomic.Uint64, size/64), mask: size - 1, hashes: min(max(k, 1), 16)}
}

// Add adds id.
func (f *Filter) Add(id uuid.UUID) {
	h1, h2 := split(id)
	for i := range f.hashes {
		bit := (h1 + uint64(i)*h2) & f.mask
		f.words[bit/64].Or(1 << (bit % 64))
	}
	f.added.Add(1)
}

// MayContain reports false if id was never added, and true if it may have been.
func (f *Filter) MayContain(id uuid.UUID) bool {
	h1, h2 := split(id)
	for i := range f.hashes {
		bit := (h1 + uint64(i)*h2) & f.mask
		if f.words[bit/64].Load()&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// Added is how many ids were added, counting repeats.
func (f *Filter) Added() int64 { return f.added.Load() }

// split derives two hashes from id (double hashing). The halves are mixed,
// so that ids with few random bits (a version, a counter) spread too.
func split(id uuid.UUID) (uint64, uint64) {
	return mix(binary.LittleEndian.Uint64(id[:8])), mix(binary.LittleEndian.Uint64(id[8:])) | 1
}

// mix is SplitMix64's finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
