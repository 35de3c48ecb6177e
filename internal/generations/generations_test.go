package generations_test

import (
	"testing"

	"github.com/crowdpass/crowdpass/internal/generations"
)

func TestAnEntryLastsTwoGenerations(t *testing.T) {
	m := generations.New[int, string](2)
	for k := 1; k <= 4; k++ {
		m.Put(k, "v") // 1 and 2 fill a generation, 3 and 4 the next
	}
	for k := 1; k <= 4; k++ {
		if _, ok := m.Get(k); !ok {
			t.Errorf("entry %d forgotten within two generations", k)
		}
	}
	m.Delete(2)
	if _, ok := m.Get(2); ok {
		t.Error("entry 2 held after Delete")
	}
	m.Put(5, "v") // 3 and 4's generation is full: 1's goes
	if _, ok := m.Get(1); ok {
		t.Error("entry 1 outlived two generations")
	}
	for _, k := range []int{3, 4, 5} {
		if _, ok := m.Get(k); !ok {
			t.Errorf("entry %d of the last two generations forgotten", k)
		}
	}
}

func TestAllYieldsWhatGetSees(t *testing.T) {
	m := generations.New[int, string](2)
	m.Put(1, "old")
	m.Put(2, "v")
	m.Put(1, "new") // 1 and 2 retire; 1 is set again in the newer generation
	got := map[int]string{}
	for k, v := range m.All() {
		if _, twice := got[k]; twice {
			t.Errorf("entry %d yielded twice", k)
		}
		got[k] = v
	}
	if len(got) != 2 || got[1] != "new" || got[2] != "v" {
		t.Errorf("All yielded %v, want 1:new 2:v", got)
	}
}

func TestACloneDoesNotChangeWithTheMap(t *testing.T) {
	m := generations.New[int, string](2)
	m.Put(1, "v")
	m.Put(2, "v")
	m.Put(3, "v")
	c := m.Clone()
	m.Delete(1)
	m.Put(4, "v") // 1 and 2's generation goes
	for _, k := range []int{1, 2, 3} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("the clone lost entry %d with the map", k)
		}
	}
	if _, ok := c.Get(4); ok {
		t.Error("the clone got an entry put after it was made")
	}
}
