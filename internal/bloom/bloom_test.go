package bloom_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass/internal/bloom"
)

// Every id added is found; of ids never added, about the rate asked for.
func TestAFilterFindsWhatWasAddedAndRarelyMore(t *testing.T) {
	t.Parallel()
	const n = 100_000
	f := bloom.New(n, 0.001)
	added := make([]uuid.UUID, n)
	for i := range added {
		added[i] = uuid.New()
		f.Add(added[i])
	}
	for _, id := range added {
		if !f.MayContain(id) {
			t.Fatalf("%s added but not found", id)
		}
	}
	hits := 0
	for range n {
		if f.MayContain(uuid.New()) {
			hits++
		}
	}
	if rate := float64(hits) / n; rate > 0.003 {
		t.Errorf("false-positive rate %.4f, want about 0.001", rate)
	}
	if f.Added() != n {
		t.Errorf("Added = %d, want %d", f.Added(), n)
	}
}

func BenchmarkMayContain(b *testing.B) {
	f := bloom.New(4_000_000, 0.001)
	id := uuid.New()
	for b.Loop() {
		f.MayContain(id)
	}
}
