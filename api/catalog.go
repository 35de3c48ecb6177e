package api

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

// catalog is the in-memory copy of the events and their categories, so that
// POST /orders never waits for PostgreSQL. It is refreshed in the background.
type catalog struct {
	mu       sync.RWMutex
	loaded   bool
	events   map[uuid.UUID]*crowdpass.Event
	category map[uuid.UUID]*crowdpass.Event // category id → its event
	// added holds events created through this process, so that a refresh
	// whose read began before their commit cannot make them vanish again.
	added map[uuid.UUID]time.Time
	// missed holds ids PostgreSQL did not know when asked since the last
	// refresh. An event's id is only known once it is committed, so an id
	// missed once is unknown until the next refresh shows otherwise.
	missed map[uuid.UUID]struct{}
	// announced holds ids of events whose creation PostgreSQL announced
	// (learnNewEvents) and that are not read yet: a miss of one is looked
	// up whatever the lookups' rate, since the event exists.
	announced map[uuid.UUID]struct{}
	// soldOut caches each category's stored sold_out answer: it depends only
	// on the category's name, which never changes, and is sent with every
	// admission.
	soldOut sync.Map // uuid.UUID → crowdpass.Answer
}

// soldOutAnswer is the answer stored against a key when cat cannot cover it.
func (c *catalog) soldOutAnswer(cat crowdpass.Category) crowdpass.Answer {
	if a, ok := c.soldOut.Load(cat.ID); ok {
		return a.(crowdpass.Answer)
	}
	a := problem.Answer(crowdpass.Errorf(crowdpass.ESoldOut, "not enough tickets left in category %q", cat.Name))
	c.soldOut.Store(cat.ID, a)
	return a
}

func (c *catalog) replace(events []crowdpass.Event) {
	// Under the write lock from the merge to the swap: an event added
	// meanwhile would be lost.
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, at := range c.added {
		if time.Since(at) < time.Minute && !slices.ContainsFunc(events, func(e crowdpass.Event) bool { return e.ID == id }) {
			events = append(events, *c.events[id])
		}
	}
	byID := make(map[uuid.UUID]*crowdpass.Event, len(events))
	byCat := make(map[uuid.UUID]*crowdpass.Event)
	for i := range events {
		e := &events[i]
		byID[e.ID] = e
		for _, cat := range e.Categories {
			byCat[cat.ID] = e
		}
	}
	c.events, c.category, c.loaded = byID, byCat, true
	c.missed = nil
	for id := range c.announced {
		if _, ok := byID[id]; ok {
			delete(c.announced, id)
		}
	}
}

// add puts one new event in, ahead of the next refresh.
func (c *catalog) add(e crowdpass.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.announced, e.ID)
	if c.events == nil {
		c.events, c.category = map[uuid.UUID]*crowdpass.Event{}, map[uuid.UUID]*crowdpass.Event{}
	}
	c.events[e.ID] = &e
	for _, cat := range e.Categories {
		c.category[cat.ID] = &e
	}
	if c.added == nil {
		c.added = map[uuid.UUID]time.Time{}
	}
	c.added[e.ID] = time.Now()
}

// event returns a copy of an event; ok is false if unknown. The returned
// event must not be modified: its categories are shared.
func (c *catalog) event(id uuid.UUID) (crowdpass.Event, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.events[id]
	if !ok {
		return crowdpass.Event{}, false
	}
	return *e, true
}

// maxPerCustomer is the event's max_per_customer, if the catalog holds it.
func (c *catalog) maxPerCustomer(id uuid.UUID) (int, bool) {
	e, ok := c.event(id)
	return e.MaxPerCustomer, ok
}

// wasMissed reports whether PostgreSQL did not know id since the last refresh.
func (c *catalog) wasMissed(id uuid.UUID) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.missed[id]
	return ok
}

// announce records that PostgreSQL announced an event's creation.
func (c *catalog) announce(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.announced == nil || len(c.announced) >= maxMissed {
		c.announced = map[uuid.UUID]struct{}{}
	}
	c.announced[id] = struct{}{}
}

// takeAnnounced reports whether id's creation was announced and the event
// is not read yet, and forgets it: one lookup per announcement goes past
// the lookups' rate, so that a database that does not answer is not asked
// again and again.
func (c *catalog) takeAnnounced(id uuid.UUID) bool {
	c.mu.RLock()
	_, ok := c.announced[id]
	c.mu.RUnlock()
	if !ok { // most misses: a flood of unknown ids takes no write lock
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok = c.announced[id]
	delete(c.announced, id)
	return ok
}

// miss records that PostgreSQL does not know id.
func (c *catalog) miss(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.missed == nil || len(c.missed) >= maxMissed {
		c.missed = map[uuid.UUID]struct{}{}
	}
	c.missed[id] = struct{}{}
}

// maxMissed bounds the remembered misses between two refreshes; past it
// they are forgotten and start again.
const maxMissed = 10_000

func (c *catalog) isLoaded() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.loaded
}

// categories lists every category with its stock as last read.
func (c *catalog) categories() []crowdpass.Category {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []crowdpass.Category
	for _, e := range c.events {
		out = append(out, e.Categories...)
	}
	return out
}

// all returns every event, oldest first.
func (c *catalog) all() []crowdpass.Event {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]crowdpass.Event, 0, len(c.events))
	for _, e := range c.events {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b crowdpass.Event) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	return out
}

// Misses of the catalog are looked up in PostgreSQL, so that an event created
// through another process (or `crowdpass event create`) can be ordered at
// once rather than after the next refresh. The lookups are bounded in rate
// and time (Config.MissTimeout): the hot path never waits long for the
// database, and a flood of unknown ids, on the public GET /events/{id}
// too, costs it at most missRate cheap reads a second.
const (
	missRate  = 20
	missBurst = 5
)

// findEvent returns the event from the catalog or, on a miss, from
// PostgreSQL. It fails with not_found if neither knows it, or if the lookup
// is over its rate: the catalog, at most a second old, then answers, so that
// a flood of unknown ids never turns bad input into a 5xx (an event created
// within that second whose creation this process has not heard of yet is
// the price: one it has heard of is looked up once whatever the rate). It
// fails with unavailable if the database failed or ran out of time: the
// event may exist.
func (s *Server) findEvent(ctx context.Context, id uuid.UUID) (crowdpass.Event, error) {
	if e, ok := s.catalog.event(id); ok {
		return e, nil
	}
	if !s.catalog.takeAnnounced(id) && (s.catalog.wasMissed(id) || !s.missLookups.Allow()) {
		return crowdpass.Event{}, errNoEvent(id)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.MissTimeout)
	defer cancel()
	e, err := s.store.Event(ctx, id)
	switch {
	case errors.Is(err, crowdpass.ErrNotFound):
		s.catalog.miss(id)
		return crowdpass.Event{}, errNoEvent(id)
	case err != nil:
		if e, ok := s.savedEvent(ctx, id); ok {
			s.catalog.add(e)
			return e, nil
		}
		s.log.Debug("event lookup failed", "event_id", id, "err", err)
		return crowdpass.Event{}, errEventUnknown
	}
	s.catalog.add(e)
	return e, nil
}

// learnNewEvents puts each event committed anywhere (another process,
// `crowdpass event create`, a DBA) into the catalog as its notification
// comes, so that it is known within a round trip: the refresh comes only
// every ReconcileInterval, and a lookup on a miss is bounded in rate, which
// a flood of unknown ids uses up. It listens again after a lost
// connection; the refresh covers what was created meanwhile.
func (s *Server) learnNewEvents(ctx context.Context) {
	backoff := listenRetryMin
	for {
		err := s.store.ListenEventsCreated(ctx, func() { backoff = listenRetryMin }, func(id uuid.UUID) {
			if _, ok := s.catalog.event(id); ok {
				return
			}
			// Until the read below is in, a request for the event reads
			// it too, rather than answer 404 when the lookups' rate is
			// used up.
			s.catalog.announce(id)
			readCtx, cancel := context.WithTimeout(ctx, catalogReadTimeout)
			defer cancel()
			e, err := s.store.Event(readCtx, id)
			if err != nil {
				s.log.Debug("new event not read; the next refresh brings it", "event_id", id, "err", err)
				return
			}
			s.catalog.add(e)
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("not listening for new events; the refresh brings them", "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenRetryMax)
	}
}

// The listener for new events retries after listenRetryMin, doubling up to
// listenRetryMax while it keeps failing.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// savedEvent finds an event in the catalog's copy in Redis (refreshCatalog),
// for a lookup PostgreSQL did not answer: an event created by another
// process shortly before the database went down is then known here too.
func (s *Server) savedEvent(ctx context.Context, id uuid.UUID) (crowdpass.Event, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
	defer cancel()
	events, _ := s.savedCatalog(ctx)
	for _, e := range events {
		if e.ID == id {
			return e, true
		}
	}
	return crowdpass.Event{}, false
}

func errNoEvent(id uuid.UUID) error {
	return crowdpass.Errorf(crowdpass.ENotFound, "event %s does not exist", id)
}

var errEventUnknown = crowdpass.Errorf(crowdpass.EUnavailable, "the event is not in this process's catalog and the database did not answer in time; nothing was created, retry")
