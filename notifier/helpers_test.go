package notifier_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass/auth"
)

func amqp091Publishing(body []byte) amqp.Publishing {
	return amqp.Publishing{ContentType: "application/json", Body: body}
}

func benchAuthority() *auth.Authority {
	a, _ := auth.New([]byte("notifier-bench"), nil)
	return a
}

// serve runs h on a test server and returns its /ws URL.
func serve(tb testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}
