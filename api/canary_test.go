package api

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
)

// flakyGate has no canary at the first check, as a new process finds,
// loses it once after that, and fails the first write-back. Only Lost and
// Restore are called (the embedded Gate is nil).
type flakyGate struct {
	Gate
	mu       sync.Mutex
	checks   int
	restores int
}

func (g *flakyGate) Lost(context.Context, string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.checks++
	return g.checks <= 2, nil
}

func (g *flakyGate) Restore(_ context.Context, answers []crowdpass.KeyAnswer) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.restores++
	if g.restores == 1 {
		return 0, errors.New("redis: connection reset")
	}
	return len(answers), nil
}

func (g *flakyGate) restored() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.restores
}

// watchWith runs watchCanary over g for a process that gave one 202, until
// the returned stop is called.
func watchWith(g Gate) (stop func()) {
	recent := NewRecent(0)
	recent.add(uuid.New(), crowdpass.KeyRecord{CustomerID: "alice", Fingerprint: "fp", Answer: crowdpass.Answer{Status: 202, Body: []byte("{}")}})
	s := New(Config{CanaryInterval: time.Millisecond, Recent: recent}, g, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watchCanary(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// The canary is set again before the answers are written back, so a
// write-back that failed is not told of again: it is tried again anyway.
func TestAFailedWriteBackIsTriedAgain(t *testing.T) {
	t.Parallel()
	g := &flakyGate{}
	stop := watchWith(g)
	defer stop()
	waitFor(t, func() bool { return g.restored() >= 2 }, "a second write-back after the first failed")
	stop()
	if g.restored() != 2 {
		t.Errorf("%d write-backs for one loss, want the failed one and its retry", g.restored())
	}
}

// downAtStartGate cannot be reached at the first check, then has no canary
// (none was ever set), then has it.
type downAtStartGate struct {
	Gate
	mu       sync.Mutex
	checks   int
	restores int
}

func (g *downAtStartGate) Lost(context.Context, string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.checks++
	if g.checks == 1 {
		return false, errors.New("dial tcp: connection refused")
	}
	return g.checks == 2, nil
}

func (g *downAtStartGate) Restore(_ context.Context, answers []crowdpass.KeyAnswer) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.restores++
	return len(answers), nil
}

// Answers given while Redis could not be reached from the start were never
// stored: the first check that works writes them back.
func TestAnswersGivenBeforeRedisWasReachedAreWrittenBack(t *testing.T) {
	t.Parallel()
	g := &downAtStartGate{}
	stop := watchWith(g)
	defer stop()
	// The write-back follows the second check, before the third.
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.checks >= 3 }, "a third check")
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.restores != 1 {
		t.Errorf("%d write-backs once Redis was reached, want 1", g.restores)
	}
}
