package main

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// watchConsole fails the test for every uncaught exception or console error
// of the page, but for the network errors a test that cuts connections causes.
func watchConsole(t *testing.T, ctx context.Context) {
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException {
				continue
			}
			if strings.Contains(m.Text, "WebSocket") || strings.Contains(m.Text, "net::ERR") || strings.Contains(m.Text, "Failed to load resource") {
				continue
			}
			mu.Lock()
			errs = append(errs, m.Text)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Errorf("console errors: %q", errs)
		}
	})
}
