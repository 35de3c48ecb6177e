package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
)

// browser starts Debian's headless Chromium for the test; the test is
// skipped where none is installed (.ci/run installs it).
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(420, 900), // a phone's width
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	watchConsole(t, ctx)
	// Cleanups run last first: the browser stops, then the console is read out.
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// screenshot writes the page to the artifacts folder (CROWDPASS_ARTIFACTS,
// default artifacts/ at the repository's root).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("CROWDPASS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 makes a PNG
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		path := filepath.Join(dir, name+".png")
		if err := os.WriteFile(path, png, 0o644); err == nil {
			t.Logf("screenshot: %s", path)
		}
	}
}

// waitJS polls a JavaScript condition in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		screenshot(t, ctx, "failed-"+strings.ReplaceAll(what, " ", "-"))
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestBuyPageBuysOnceAndFollowsTheOutcomeLive(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	addr := freeAddr(t)
	getenv := env(db, testkit.Namespace(t), "HTTP_ADDR", addr, "DEMO_MODE", "true")
	store := postgres.NewStore(db.Pool, nil)
	event, err := store.CreateEvent(testkit.Context(t), crowdpass.EventSpec{Name: "Browser Final", Categories: []crowdpass.CategorySpec{
		{Name: "Open", Capacity: 100, PriceCents: 5000}, {Name: "Tiny", Capacity: 1, PriceCents: 9000}}})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else has bought the only Tiny ticket.
	if _, err := store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{testkit.OrderRequest("someone", "k", event, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	startServe(t, getenv, addr)
	// The page goes through a proxy, so that the test can cut its socket
	// from the server's side.
	proxy := testkit.NewProxy(t, addr)
	page := "http://" + proxy.Addr()
	ctx := browser(t)

	open, tiny := event.Categories[0].ID.String(), event.Categories[1].ID.String()
	if err := chromedp.Do(ctx, chromedp.Navigate(page+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the event loaded", fmt.Sprintf(`[...document.querySelectorAll("#category option")].some(o => o.value === %q)`, open))
	waitJS(t, ctx, "the socket live", `document.getElementById("conn").textContent === "live"`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#event"), event.ID.String()),
		chromedp.SetValue(chromedp.CSS("#category"), open),
		chromedp.Click(chromedp.CSS("#buy-button")),
	); err != nil {
		t.Fatal(err)
	}
	customer, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.parse(localStorage.getItem("crowdpass-demo")).customer`))
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "a confirmed order with its seat", `[...document.querySelectorAll("#orders .status.confirmed")].some(s => /seats \d/.test(s.textContent))`)
	screenshot(t, ctx, "buy-confirmed")

	// A double click is one purchase.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#quantity"), "2"), chromedp.DoubleClick(chromedp.CSS("#buy-button"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the double-clicked order confirmed", `document.querySelectorAll("#orders .status.confirmed").length === 2`)
	testkit.Eventually(t, 10*time.Second, func() bool { return countOrders(t, db, customer) == 2 }, "two orders in the database")
	if err := chromedp.Do(ctx, chromedp.DoubleClick(chromedp.CSS("#buy-button"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the replayed answer", `document.getElementById("message").textContent.startsWith("Order received")`)
	if n := countOrders(t, db, customer); n != 2 {
		t.Errorf("%d orders in the database after a double click, want 2", n)
	}

	// A sold-out category says so.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#quantity"), "1"), chromedp.SetValue(chromedp.CSS("#category"), tiny),
		chromedp.Click(chromedp.CSS("#buy-button"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "sold out shown", `document.body.innerText.toLowerCase().includes("sold out")`)
	screenshot(t, ctx, "buy-sold-out")

	// The socket is cut from the server's side; an order is decided while
	// the page is away; the page reconnects and shows its outcome.
	proxy.Refuse()
	waitJS(t, ctx, "the page noticing the cut", `document.getElementById("conn").textContent !== "live"`)
	screenshot(t, ctx, "buy-reconnecting")
	token, err := chromedp.Run(ctx, chromedp.Evaluate[string](`state.token`))
	if err != nil {
		t.Fatal(err)
	}
	orderID := postDirect(t, addr, token, event.ID.String(), open)
	testkit.Eventually(t, 10*time.Second, func() bool { return countDecided(t, db, orderID) }, "the order decided while the page is away")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](fmt.Sprintf(`upsert({order_id: %q, status: "pending", quantity: 1})`, orderID))); err != nil {
		t.Fatal(err)
	}
	proxy.Allow()
	waitJS(t, ctx, "the outcome after reconnecting", fmt.Sprintf(`(document.querySelector('#orders li[data-order-id=%q] .status') || {}).className === "status confirmed"`, orderID))
	screenshot(t, ctx, "buy-after-reconnect")
}

func TestDashboardShowsTheStockFallingToZero(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	addr := freeAddr(t)
	getenv := env(db, testkit.Namespace(t), "HTTP_ADDR", addr)
	startServe(t, getenv, addr)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/dashboard")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the stream live", `document.getElementById("conn").textContent === "live"`)

	done := make(chan int, 1)
	go func() {
		_, _, code := runCLI(t, getenv, "rush", "--target", "http://"+addr, "--buyers", "400", "--tickets", "100",
			"--categories", "2", "--concurrency", "16", "--watchers", "10", "--progress=false", "--baseline", "0")
		done <- code
	}()
	waitJS(t, ctx, "a rush category on the page", `[...document.querySelectorAll(".card[data-category-id]")].some(c => c.textContent.includes("Rush"))`)
	screenshot(t, ctx, "dashboard-during-rush")
	waitJS(t, ctx, "every rush category at 0", `(() => { const cs = [...document.querySelectorAll(".card[data-category-id]")].filter(c => c.textContent.includes("Rush"));
		return cs.length === 2 && cs.every(c => c.querySelector(".remaining").textContent === "0"); })()`)
	screenshot(t, ctx, "dashboard-sold-out")
	if code := <-done; code != 0 {
		t.Errorf("rush exited %d", code)
	}
}

func countOrders(t *testing.T, db *testkit.DB, customer string) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM orders WHERE customer_id = $1", customer).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func countDecided(t *testing.T, db *testkit.DB, orderID string) bool {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM orders WHERE id = $1 AND status <> 'pending'", orderID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// postDirect buys one ticket as the page's customer, bypassing the page.
func postDirect(t *testing.T, addr, token, event, category string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/orders", strings.NewReader(
		fmt.Sprintf(`{"event_id":%q,"category_id":%q,"quantity":1}`, event, category)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "direct-"+testkit.Token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("direct order: %d", resp.StatusCode)
	}
	return strings.TrimPrefix(loc.Path, "/orders/")
}
