package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/rush"
)

func runRush(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	fs := newFlagSet("rush")
	cfg.connectionFlags(fs)
	var (
		rc       rush.Config
		asJSON   bool
		progress bool
	)
	fs.StringVar(&rc.Target, "target", "http://127.0.0.1:8080", "base URL of the running deployment (make run's by default)")
	fs.StringVar(&rc.WSTarget, "ws-target", "", "base URL of the notifier's /ws when it runs apart from the API (default: -target)")
	fs.IntVar(&rc.Buyers, "buyers", 1_000_000, "people pressing Buy, one ticket each")
	fs.IntVar(&rc.Tickets, "tickets", 50_000, "tickets on sale")
	fs.IntVar(&rc.Categories, "categories", 4, "categories the tickets are split over")
	fs.IntVar(&rc.Concurrency, "concurrency", 256, "requests in flight at once")
	fs.Float64Var(&rc.DoubleClick, "double-click", 0.05, "share of buyers who send their purchase twice at once")
	fs.IntVar(&rc.Watchers, "watchers", 2000, "buyers who keep a WebSocket open to time their notification")
	fs.IntVar(&rc.Retries, "retries", 10, "resends of one purchase after a timeout, 503 or request_in_progress")
	fs.BoolVar(&rc.Bare, "bare", false, "measure the generator alone against a built-in 202 handler")
	fs.IntVar(&rc.Baseline, "baseline", 100_000, "purchases sent first to a built-in 202 handler, for the ratio to the generator's ceiling (0: none)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&progress, "progress", true, "show progress on stderr")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if rc.Buyers == 0 || rc.Tickets == 0 || rc.Concurrency == 0 || rc.Categories == 0 {
		return usagef("rush: --buyers, --tickets, --concurrency and --categories must be positive")
	}
	if err := rc.Validate(); err != nil {
		return usagef("rush: %v", err)
	}
	rc.Secret = []byte(jwtSecret(cfg.JWTSecret, stderr))
	if progress {
		rc.Progress = stderr
		if f, ok := stderr.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				rc.Terminal = true
			}
		}
	}

	if cfg.PprofAddr != "" { // to profile the generator itself
		var wg sync.WaitGroup
		pctx, stop := context.WithCancel(ctx)
		defer wg.Wait()
		defer stop()
		wg.Go(func() { _ = serveHTTP(pctx, cfg.PprofAddr, pprofHandler(), nil, cfg.logger(stderr)) })
	}

	var auditor rush.Auditor
	if !rc.Bare {
		if err := checkDatabaseURL(cfg.DatabaseURL); err != nil {
			return err
		}
		pool, err := postgres.Open(ctx, cfg.DatabaseURL, 4)
		if err != nil {
			return fmt.Errorf("rush audits in PostgreSQL: %w", err)
		}
		defer pool.Close()
		auditor = postgres.NewStore(pool, nil)
	}
	rep, err := rush.Run(ctx, rc, auditor)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if rep.Failed() {
		return errors.New("rush: the audit failed")
	}
	return nil
}

func printReport(w io.Writer, r rush.Report) {
	fmt.Fprintf(w, "CrowdPass rush against %s\n", r.Target)
	fmt.Fprintf(w, "  buyers %d, tickets %d, event %s\n", r.Buyers, r.Tickets, r.EventID)
	fmt.Fprintf(w, "  %d requests in %.1fs: %.0f req/s\n", r.Requests, r.Seconds, r.RequestsPerSecond)
	if r.BareRequestsPerSecond > 0 {
		fmt.Fprintf(w, "  the generator alone against a bare 202 handler: %.0f req/s; this run: %.1f%% of it\n", r.BareRequestsPerSecond, 100*r.RatioToBare)
	}
	fmt.Fprintf(w, "  POST /orders latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	fmt.Fprintf(w, "    of which first 202s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.LatencyAccepted.P50, r.LatencyAccepted.P90, r.LatencyAccepted.P99, r.LatencyAccepted.Max)
	labels := make([]string, 0, len(r.Answers))
	for k := range r.Answers {
		labels = append(labels, k)
	}
	sort.Strings(labels)
	fmt.Fprintln(w, "  answers:")
	for _, k := range labels {
		fmt.Fprintf(w, "    %-40s %d\n", k, r.Answers[k])
	}
	fmt.Fprintf(w, "  accepted orders %d, buyers without an answer %d\n", r.Accepted, r.Unanswered)
	if r.EventID == "" {
		return
	}
	fmt.Fprintf(w, "  sold %d of %d, oversold %d, accepted but never decided %d\n", r.Sold, r.Tickets, r.Oversold, r.NeverDecided)
	fmt.Fprintf(w, "  orders in PostgreSQL per ticket %.3f\n", r.OrdersPerTicket)
	fmt.Fprintf(w, "  last ticket sold after %s, last outcome delivered after %s\n", secs(r.SecondsToLastTicket), secs(r.SecondsToLastOutcome))
	fmt.Fprintf(w, "  notification latency (processed_at to socket, %d of %d watchers notified): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		r.WatchersNotified, r.WatchersAccepted, r.Notification.P50, r.Notification.P99, r.Notification.Max)
	if len(r.Violations) == 0 {
		fmt.Fprintln(w, "  audit: every invariant holds")
		return
	}
	fmt.Fprintln(w, "  audit FAILED:")
	for _, v := range r.Violations {
		fmt.Fprintf(w, "    %s\n", v)
	}
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
