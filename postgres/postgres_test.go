package postgres_test

import (
	"net/url"
	"testing"

	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
)

// Every pool's sessions end a transaction left idle past
// IdleInTransactionTimeout, so that a stopped process frees its locks,
// unless the URL's options set the timeout themselves.
func TestPoolsEndIdleTransactions(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += "options=-c%20idle_in_transaction_session_timeout%3D7s" // pgx reads "+" as itself
	for _, c := range []struct{ url, want string }{
		{db.URL, postgres.IdleInTransactionTimeout},
		{u.String(), "7s"},
	} {
		pool, err := postgres.Open(testkit.Context(t), c.url, 1)
		if err != nil {
			t.Fatal(err)
		}
		var timeout string
		err = pool.QueryRow(testkit.Context(t), "SHOW idle_in_transaction_session_timeout").Scan(&timeout)
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		if timeout != c.want {
			t.Errorf("idle_in_transaction_session_timeout = %q with %s, want %q", timeout, c.url, c.want)
		}
	}
}
