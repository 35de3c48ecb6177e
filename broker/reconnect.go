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
		if !Sleep(ctx, backoff) {
			return
		}
		backoff = 2 * backoff
		if backoff > max {
			backoff = max
		}
	}
}

// Sleep waits d or until ctx is done; it reports whether d elapsed. The
// roles wait with it between attempts at a broker or a database.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
