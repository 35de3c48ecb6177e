package api

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
)

// oneEvent is a database that holds one event (only Event is called).
type oneEvent struct {
	Store
	event crowdpass.Event
}

func (s oneEvent) Event(_ context.Context, id uuid.UUID) (crowdpass.Event, error) {
	if id != s.event.ID {
		return crowdpass.Event{}, crowdpass.ErrNotFound
	}
	return s.event, nil
}

// A miss of an event whose creation PostgreSQL announced is looked up even
// when a flood of unknown ids has used up the lookups' rate, which would
// otherwise answer 404 until the next refresh.
func TestAnAnnouncedEventIsLookedUpWhateverTheRate(t *testing.T) {
	event := crowdpass.Event{ID: uuid.New(), MaxPerCustomer: 4}
	s := New(Config{}, nil, nil, oneEvent{event: event}, nil)
	ctx := context.Background()
	for range 10 * missBurst {
		if _, err := s.findEvent(ctx, uuid.New()); crowdpass.Code(err) != crowdpass.ENotFound {
			t.Fatalf("an unknown event: %v, want not_found", err)
		}
	}
	if _, err := s.findEvent(ctx, event.ID); crowdpass.Code(err) != crowdpass.ENotFound {
		t.Fatalf("an event not announced, the rate used up: %v; want not_found (or the test uses up no rate)", err)
	}
	s.catalog.announce(event.ID)
	if got, err := s.findEvent(ctx, event.ID); err != nil || got.ID != event.ID {
		t.Fatalf("an announced event, the rate used up: %+v, %v; want it found", got, err)
	}
	if _, ok := s.catalog.event(event.ID); !ok || s.catalog.takeAnnounced(event.ID) {
		t.Error("the event read is not in the catalog, or still announced")
	}
}
