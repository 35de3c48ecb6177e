// Package gate is the Redis fast path of the API: the idempotency cache and
// the stock pre-check, each decision one atomic Lua script.
//
// Redis holds caches and gates only. A missing idempotency record means "not
// known here", and a missing stock key means "admit and let the database
// decide", never "sold out"; the API rebuilds stock keys from PostgreSQL.
package gate

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/crowdpass/crowdpass"
)

// Config configures a Redis gate.
type Config struct {
	// Namespace prefixes every key (CROWDPASS_NAMESPACE).
	Namespace string
	// AnswerTTL is how long answers are remembered (IDEMPOTENCY_TTL, at least 24h).
	AnswerTTL time.Duration
	// InFlightTTL bounds how long a key stays in flight if its request's
	// process dies before answering; it must outlast the publish timeout.
	InFlightTTL time.Duration
}

// Redis is the gate on a Redis server.
type Redis struct {
	rdb  redis.UniversalClient
	cfg  Config
	pipe *pipeliner
}

// New returns a gate on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Redis {
	if cfg.AnswerTTL <= 0 {
		cfg.AnswerTTL = 24 * time.Hour
	}
	if cfg.InFlightTTL <= 0 {
		cfg.InFlightTTL = 10 * time.Second
	}
	return &Redis{rdb: rdb, cfg: cfg, pipe: newPipeliner(rdb)}
}

// Close stops the gate's pipelines; calls after it fail.
func (g *Redis) Close() { g.pipe.close() }

func (g *Redis) keyKey(order uuid.UUID) string { return g.cfg.Namespace + "idem:" + order.String() }

// StockKey is the Redis key of a category's gate stock.
func (g *Redis) StockKey(category uuid.UUID) string {
	return g.cfg.Namespace + "stock:" + category.String()
}

//go:embed admit.lua
var admitSource string

//go:embed abort.lua
var abortSource string

var (
	admitScript    = redis.NewScript(admitSource)
	abortScript    = redis.NewScript(abortSource)
	completeScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'cust', ARGV[2], 'status', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`)
	casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1`)
)

// Admit looks the key up and, if it is new, checks the window and takes the
// stock, all in one atomic step. owner identifies this attempt, so that
// Abort never undoes another attempt's mark.
func (g *Redis) Admit(ctx context.Context, a crowdpass.Admission, owner string) (crowdpass.AdmissionResult, error) {
	val, err := g.pipe.do(ctx, admitScript, []string{g.keyKey(a.OrderID), g.StockKey(a.CategoryID)},
		a.Fingerprint, a.CustomerID, a.Quantity, string(a.Window), g.cfg.InFlightTTL.Milliseconds(),
		a.SoldOut.Status, a.SoldOut.Body, g.cfg.AnswerTTL.Milliseconds(), owner)
	if err != nil {
		return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: %w", err)
	}
	res, ok := val.([]any)
	if !ok || len(res) == 0 {
		return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: unexpected answer %v", val)
	}
	verdict, _ := res[0].(string)
	switch verdict {
	case "admitted":
		taken, _ := res[1].(int64)
		return crowdpass.AdmissionResult{Verdict: crowdpass.Admitted, Taken: int(taken)}, nil
	case "replay":
		status, err := strconv.Atoi(fmt.Sprint(res[1]))
		if err != nil {
			return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: stored status %v: %w", res[1], err)
		}
		body, _ := res[2].(string)
		return crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: crowdpass.Answer{Status: status, Body: []byte(body)}}, nil
	case "mismatch":
		return crowdpass.AdmissionResult{Verdict: crowdpass.Mismatch}, nil
	case "inflight":
		return crowdpass.AdmissionResult{Verdict: crowdpass.InProgress}, nil
	case "window":
		return crowdpass.AdmissionResult{Verdict: crowdpass.OutsideWindow}, nil
	case "soldout":
		return crowdpass.AdmissionResult{Verdict: crowdpass.SoldOut, Answer: a.SoldOut}, nil
	}
	return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: unexpected answer %v", res)
}

// Complete stores the answer to an admitted key for AnswerTTL.
func (g *Redis) Complete(ctx context.Context, a crowdpass.Admission, answer crowdpass.Answer) error {
	_, err := g.pipe.do(ctx, completeScript, []string{g.keyKey(a.OrderID)},
		a.Fingerprint, a.CustomerID, answer.Status, answer.Body, g.cfg.AnswerTTL.Milliseconds())
	if err != nil {
		return fmt.Errorf("storing answer: %w", err)
	}
	return nil
}

// Abort undoes an admission whose order could not be queued: the in-flight
// mark goes (if it is still this attempt's) and the taken stock comes back
// (if the gate still has the category).
func (g *Redis) Abort(ctx context.Context, a crowdpass.Admission, owner string, taken int) error {
	err := abortScript.Run(ctx, g.rdb, []string{g.keyKey(a.OrderID), g.StockKey(a.CategoryID)}, owner, taken).Err()
	if err != nil {
		return fmt.Errorf("aborting admission: %w", err)
	}
	return nil
}

// Lookup returns what the gate remembers of an order's key; ErrNotFound if nothing.
func (g *Redis) Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error) {
	vals, err := g.rdb.HMGet(ctx, g.keyKey(order), "cust", "status", "body").Result()
	if err != nil {
		return crowdpass.KeyRecord{}, fmt.Errorf("looking up order key: %w", err)
	}
	cust, ok := vals[0].(string)
	if !ok {
		return crowdpass.KeyRecord{}, crowdpass.ErrNotFound
	}
	rec := crowdpass.KeyRecord{CustomerID: cust, InFlight: vals[1] == nil}
	if s, ok := vals[1].(string); ok {
		rec.Answer.Status, _ = strconv.Atoi(s)
		body, _ := vals[2].(string)
		rec.Answer.Body = []byte(body)
	}
	return rec, nil
}

// Stock returns a category's gate stock; ok is false when the gate does not know it.
func (g *Redis) Stock(ctx context.Context, category uuid.UUID) (n int, ok bool, err error) {
	n, err = g.rdb.Get(ctx, g.StockKey(category)).Int()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading gate stock: %w", err)
	}
	return n, true, nil
}

// SetStock sets a category's gate stock to n if it still is what the caller
// saw (known false: missing). It reports whether it did.
func (g *Redis) SetStock(ctx context.Context, category uuid.UUID, saw int, known bool, n int) (bool, error) {
	expected := ""
	if known {
		expected = strconv.Itoa(saw)
	}
	set, err := casScript.Run(ctx, g.rdb, []string{g.StockKey(category)}, expected, n).Int()
	if err != nil {
		return false, fmt.Errorf("setting gate stock: %w", err)
	}
	return set == 1, nil
}

// Ping checks Redis answers.
func (g *Redis) Ping(ctx context.Context) error { return g.rdb.Ping(ctx).Err() }
