package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
)

// ListenEventsCreated hears each event committed once it listens, and
// returns when its connection dies, for its caller to listen again.
func TestListenEventsCreatedHearsNewEventsAndEndsWithItsConnection(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	store := postgres.NewStore(db.Pool, nil)
	ctx, cancel := context.WithCancel(testkit.Context(t))
	defer cancel()
	listening := make(chan struct{})
	heard := make(chan uuid.UUID, 1)
	result := make(chan error, 1)
	go func() {
		result <- store.ListenEventsCreated(ctx, func() { close(listening) }, func(id uuid.UUID) { heard <- id })
	}()
	select {
	case <-listening:
	case err := <-result:
		t.Fatalf("ListenEventsCreated = %v before it listened", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not listening after 10 s")
	}

	event := testkit.CreateEvent(t, store, 4, 10)
	select {
	case id := <-heard:
		if id != event.ID {
			t.Errorf("heard of %s, want %s", id, event.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new event not heard of after 10 s")
	}

	if _, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN events_created'`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err == nil {
			t.Error("ListenEventsCreated = nil after its connection died")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenEventsCreated still listening 10 s after its connection died")
	}
}
