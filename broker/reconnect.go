package broker

import (
	"context"
	"log/slog"
	"time"
)

// Reconnect runs session over and over until ctx is done, waiting between
// attempts with an exponential backoff from min to max. session calls
// connected once it is up, which resets the backoff; each loss and each
// recovery is logged once, however many attempts lie between them.
// afterSession runs after every session, to clear readiness flags.
func Reconnect(ctx context.Context, log *slog.Logger, min, max time.Duration,
	session func(ctx context.Context, connected func()) error, afterSession func()) {
	backoff := min
	lost := false
	for {
		err := session(ctx, func() {
			if lost {
				log.Info("broker connection restored")
				lost = false
			}
			backoff = min
		})
		if afterSession != nil {
			afterSession()
		}
		if ctx.Err() != nil {
			return
		}
		if !lost {
			log.Warn("broker connection lost; reconnecting", "err", err)
			lost = true
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = 2 * backoff
		if backoff > max {
			backoff = max
		}
	}
}
