package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Many dashboard streams asking for the queue's depth at once cost one read,
// whose value they share while it is fresh.
func TestDashboardsShareOneReadOfTheQueueDepth(t *testing.T) {
	t.Parallel()
	var reads atomic.Int32
	reading, release := make(chan struct{}), make(chan struct{})
	d := &sharedDepth{fresh: time.Hour, read: func(context.Context) (int, error) {
		if reads.Add(1) == 1 {
			close(reading)
		}
		<-release
		return 7, nil
	}}
	var wg sync.WaitGroup
	wg.Go(func() {
		if n, err := d.get(context.Background()); n != 7 || err != nil {
			t.Errorf("the reading stream got %d, %v", n, err)
		}
	})
	<-reading
	// Until the read ends, the others wait for nothing: no value yet.
	if _, err := d.get(context.Background()); err == nil {
		t.Error("a stream got a depth before the first read ended")
	}
	close(release)
	wg.Wait()
	for range 10 {
		if n, err := d.get(context.Background()); n != 7 || err != nil {
			t.Errorf("a later stream got %d, %v", n, err)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads of the depth, want 1", n)
	}
}
