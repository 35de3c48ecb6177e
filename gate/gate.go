// Package gate is the Redis fast path of the API: the idempotency cache and
// the stock pre-check, each decision one atomic step: a Lua script, or a
// single SET NX GET where the caller already knows the stock is short.
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
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	// After it a retry takes the key over and queues the order again (see
	// admit.lua); the mark itself is kept for AnswerTTL.
	InFlightTTL time.Duration
	// LiveTTL is how long a process's live mark outlives its last renewal
	// (an admission, or KeepAlive): once it is gone, the process
	// is taken for dead and its keys in flight are taken over at once,
	// without waiting for InFlightTTL. It must be well above the interval
	// of KeepAlive's calls.
	LiveTTL time.Duration
	// Recovery is how long an epoch begun after Redis lost its keys
	// recovers (epoch.lua): every process notices the loss (its canary)
	// and writes back the answers it remembers within it, and an answer
	// given anew meanwhile is looked at again once it is over (default 1s).
	Recovery time.Duration
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
	if cfg.LiveTTL <= 0 {
		cfg.LiveTTL = 3 * time.Second
	}
	if cfg.Recovery <= 0 {
		cfg.Recovery = time.Second
	}
	return &Redis{rdb: rdb, cfg: cfg, pipe: newPipeliner(rdb, cfg.Namespace+"gate:epoch", cfg.Recovery)}
}

// Close stops the gate's pipelines; calls after it fail.
func (g *Redis) Close() { g.pipe.close() }

// keyKey is the Redis key of an order's idempotency record. "v2" is the
// string record of record.go; the hashes of v1 are simply not seen, as if
// Redis had lost them.
func (g *Redis) keyKey(order uuid.UUID) string {
	return g.cfg.Namespace + "idem:v2:" + order.String()
}

// livePrefix starts the Redis key of a process's live mark; the process's
// name follows.
func (g *Redis) livePrefix() string { return g.cfg.Namespace + "gate:live:" }

// StockKey is the Redis key of a category's gate stock.
func (g *Redis) StockKey(category uuid.UUID) string {
	return g.cfg.Namespace + "stock:" + category.String()
}

//go:embed admit.lua
var admitSource string

//go:embed abort.lua
var abortSource string

//go:embed remember.lua
var rememberSource string

//go:embed epoch.lua
var epochSource string

//go:embed refusal.lua
var refusalSource string

var (
	admitScript    = redis.NewScript(admitSource)
	abortScript    = redis.NewScript(abortSource)
	rememberScript = redis.NewScript(rememberSource)
	epochScript    = redis.NewScript(epochSource)
	refusalScript  = redis.NewScript(refusalSource)
	casScript      = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1`)
)

// Admit looks the key up and, if it is new, checks the window and takes the
// stock, all in one atomic step. owner identifies this attempt, so that
// Abort never undoes another attempt's mark; an owner "<process>.<attempt>"
// also names its process (a name without '.', '@' or newline), whose keys
// in flight are taken over as soon as its live mark is gone (KeepAlive).
func (g *Redis) Admit(ctx context.Context, a crowdpass.Admission, owner string) (crowdpass.AdmissionResult, error) {
	soldOut := record{status: a.SoldOut.Status, fp: a.Fingerprint, customer: a.CustomerID, body: a.SoldOut.Body}
	head, tail := record{fp: a.Fingerprint, owner: owner + "@", customer: a.CustomerID}.split()
	process, _, named := strings.Cut(owner, ".")
	if !named {
		process = ""
	}
	call := g.pipe.do(ctx, admitScript, []string{g.keyKey(a.OrderID), g.StockKey(a.CategoryID)},
		a.Fingerprint, a.Quantity, string(a.Window), g.cfg.InFlightTTL.Milliseconds(),
		soldOut.encode(), head, g.cfg.AnswerTTL.Milliseconds(), tail, acceptedAt(a.AcceptedAt), remaining(a),
		g.livePrefix(), process, g.cfg.LiveTTL.Milliseconds())
	val, err := call.val, call.err
	if err != nil {
		return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: %w", err)
	}
	res, _ := val.([]any)
	verdict := ""
	if len(res) > 0 {
		verdict, _ = res[0].(string)
	}
	switch {
	case verdict == "admitted" && (len(res) == 2 || len(res) == 3):
		taken, _ := res[1].(int64)
		r := crowdpass.AdmissionResult{Verdict: crowdpass.Admitted, Taken: int(taken), Recovering: call.recovering}
		if len(res) == 3 { // taken over: the dead attempt's time
			r.TookOver = true
			at, _ := res[2].(string)
			if us, err := strconv.ParseInt(at, 10, 64); err == nil {
				r.AcceptedAt = crowdpass.NewTime(time.UnixMicro(us))
			}
		}
		return r, nil
	case verdict == "replay" && len(res) == 2:
		rec, err := heldRecord(res[1])
		if err != nil {
			return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: %w", err)
		}
		return rec.replayed(a.Fingerprint, call.recovering), nil
	case verdict == "mismatch":
		return crowdpass.AdmissionResult{Verdict: crowdpass.Mismatch}, nil
	case verdict == "inflight":
		// During a recovery the attempt in flight was admitted anew since
		// the loss, and may yet give way to an answer written back.
		return crowdpass.AdmissionResult{Verdict: crowdpass.InProgress, Recovering: call.recovering}, nil
	case verdict == "window":
		return crowdpass.AdmissionResult{Verdict: crowdpass.OutsideWindow}, nil
	case verdict == "nostock":
		return crowdpass.AdmissionResult{Verdict: crowdpass.StockUnknown, Recovering: call.recovering}, nil
	case verdict == "soldout" && len(res) == 2:
		stock, _ := res[1].(int64)
		return crowdpass.AdmissionResult{Verdict: crowdpass.SoldOut, Answer: a.SoldOut, Stock: int(stock), StockKnown: true, Recovering: call.recovering}, nil
	}
	return crowdpass.AdmissionResult{}, fmt.Errorf("admitting order: unexpected answer %v", val)
}

// acceptedAt encodes an acceptance time as an in-flight mark's body: unix
// microseconds, the precision of every time CrowdPass shows; "" for none.
func acceptedAt(t crowdpass.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

// remaining is the catalog's remaining for the admission script; "" if
// unknown, "?" to be told the stock is missing.
func remaining(a crowdpass.Admission) string {
	if a.AskStock {
		return "?"
	}
	if !a.RemainingKnown {
		return ""
	}
	return strconv.Itoa(max(a.Remaining, 0))
}

// Refuse answers a request its caller has found the stock cannot cover, in
// an open sale, without looking at the stock: a new key gets the sold-out
// answer stored, and a known key is replayed, mismatched or in progress
// exactly as Admit would answer. It is one SET NX GET: a quarter of the
// admission script's cost in Redis, and 15% more requests per second in a
// rush than a script that also reads the stock (an A/B of two runs each).
// The caller owns the staleness of what it found: see api/edge.go. A Redis
// before 7.0, which refuses SET with both NX and GET, gets Admit, as owner.
func (g *Redis) Refuse(ctx context.Context, a crowdpass.Admission, owner string) (crowdpass.AdmissionResult, error) {
	soldOut := record{status: a.SoldOut.Status, fp: a.Fingerprint, customer: a.CustomerID, body: a.SoldOut.Body}
	held, stored, recovering, err := g.setNX(ctx, a.OrderID, soldOut)
	var reply redis.Error
	switch {
	case errors.As(err, &reply):
		return g.Admit(ctx, a, owner) // a Redis before 7.0: no SET NX GET
	case err != nil:
		return crowdpass.AdmissionResult{}, fmt.Errorf("refusing order: %w", err)
	case stored:
		return crowdpass.AdmissionResult{Verdict: crowdpass.SoldOut, Answer: a.SoldOut, Recovering: recovering}, nil
	case held.status == 0 && held.fp == a.Fingerprint:
		// In flight, or left by an attempt that died: the script tells
		// which, and takes the key over in the second case.
		return g.Admit(ctx, a, owner)
	}
	return held.replayed(a.Fingerprint, recovering), nil
}

// Remember stores rec, the answer this process gave the key, where Redis
// lost it, and answers a from the record Redis then holds: a replay, a
// mismatch, or, for a refusal, in progress if the key was admitted anew
// meanwhile. A 202 takes the place of what remember.lua says (a 202 rebuilt
// from the decided order, of any other 202 of its payload too); a refusal
// (sold_out at the edge: no order exists) only of no record, since the key
// may have been admitted since Redis lost it, and that admission stands.
// stored reports whether rec was written.
func (g *Redis) Remember(ctx context.Context, a crowdpass.Admission, rec crowdpass.KeyRecord) (res crowdpass.AdmissionResult, stored bool, err error) {
	answer := record{status: rec.Answer.Status, fp: rec.Fingerprint, customer: a.CustomerID, body: rec.Answer.Body}
	if rec.Answer.Status != http.StatusAccepted {
		held, stored, _, err := g.setNX(ctx, a.OrderID, answer)
		switch {
		case err != nil:
			return crowdpass.AdmissionResult{}, false, fmt.Errorf("remembering answer: %w", err)
		case stored:
			return answer.verdict(a.Fingerprint), true, nil
		}
		return held.verdict(a.Fingerprint), false, nil
	}
	decided := ""
	if rec.FromOrder {
		decided = "1"
	}
	call := g.pipe.do(ctx, rememberScript, []string{g.keyKey(a.OrderID)}, answer.encode(), g.cfg.AnswerTTL.Milliseconds(), rec.Fingerprint, decided)
	val, err := call.val, call.err
	if errors.Is(err, redis.Nil) {
		return answer.verdict(a.Fingerprint), true, nil
	}
	if err != nil {
		return crowdpass.AdmissionResult{}, false, fmt.Errorf("remembering answer: %w", err)
	}
	held, err := heldRecord(val)
	if err != nil {
		return crowdpass.AdmissionResult{}, false, fmt.Errorf("remembering answer: %w", err)
	}
	return held.verdict(a.Fingerprint), false, nil
}

// restoredOwner names the writer of a refusal Restore wrote back (refusal.lua).
const restoredOwner = "restored"

// restoreBatch is how many answers Restore writes per round trip.
const restoreBatch = 512

// Restore writes back answers this process gave, after Redis lost its keys,
// each as Remember would: a 202 in the place of no record, of an in-flight
// mark of its payload or of a sold_out stored for it since; a refusal only
// where there is no record. It uses pipelines of its own, not the
// admissions', so that a long list does not hold them up, and returns how
// many it stored.
func (g *Redis) Restore(ctx context.Context, answers []crowdpass.KeyAnswer) (stored int, err error) {
	if len(answers) == 0 {
		return 0, nil
	}
	// A restarted Redis has forgotten the scripts too.
	for _, script := range []*redis.Script{rememberScript, refusalScript} {
		if err := script.Load(ctx, g.rdb).Err(); err != nil {
			return 0, fmt.Errorf("restoring answers: %w", err)
		}
	}
	ttl := g.cfg.AnswerTTL.Milliseconds()
	for chunk := range slices.Chunk(answers, restoreBatch) {
		pipe := g.rdb.Pipeline()
		cmds := make([]redis.Cmder, len(chunk))
		for i, a := range chunk {
			rec := record{status: a.Answer.Status, fp: a.Fingerprint, customer: a.CustomerID, body: a.Answer.Body}
			key := g.keyKey(a.OrderID)
			if a.Answer.Status == http.StatusAccepted {
				cmds[i] = rememberScript.EvalSha(ctx, pipe, []string{key}, rec.encode(), ttl, a.Fingerprint)
			} else {
				restored := rec
				restored.owner = restoredOwner
				cmds[i] = refusalScript.EvalSha(ctx, pipe, []string{key, g.cfg.Namespace + "gate:epoch"}, restored.encode(), ttl, a.Fingerprint,
					a.Answer.Status, a.Answer.Body, g.cfg.InFlightTTL.Milliseconds(), (g.cfg.Recovery + 100*time.Millisecond).Milliseconds())
			}
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		for _, c := range cmds {
			err := c.Err()
			switch {
			case errors.Is(err, redis.Nil): // remember.lua stored it
				stored++
			case err != nil:
				return stored, fmt.Errorf("restoring answers: %w", err)
			default: // refusal.lua: 1 when it stored
				if n, _ := c.(*redis.Cmd).Int(); n == 1 {
					stored++
				}
			}
		}
	}
	return stored, nil
}

// canaryTTL is how long a canary outlives its last check.
const canaryTTL = time.Minute

// Lost reports whether Redis lost this process's canary, a key it sets and
// checks again and again (Redis was flushed, or restarted without its data,
// or the process had not checked for canaryTTL), and sets it again. The
// first call of a process reports it lost: there was none.
func (g *Redis) Lost(ctx context.Context, process string) (bool, error) {
	err := g.pipe.doCmd(ctx, "set", g.cfg.Namespace+"gate:canary:"+process, "1", "get", "px", canaryTTL.Milliseconds()).err
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking the canary: %w", err)
	}
	return false, nil
}

// KeepAlive renews the process's live mark (see Admit) for LiveTTL; a
// process renews it well within that, whatever else it is doing.
func (g *Redis) KeepAlive(ctx context.Context, process string) error {
	if err := g.pipe.doCmd(ctx, "set", g.livePrefix()+process, "1", "px", g.cfg.LiveTTL.Milliseconds()).err; err != nil {
		return fmt.Errorf("renewing the live mark: %w", err)
	}
	return nil
}

// setNX stores rec under the order's key unless a record is there, in one
// SET NX GET: stored reports whether it was, held is the record found,
// recovering whether it ran while the epoch recovered (pipeliner).
func (g *Redis) setNX(ctx context.Context, order uuid.UUID, rec record) (held record, stored bool, recovering time.Time, err error) {
	call := g.pipe.doCmd(ctx, "set", g.keyKey(order), rec.encode(), "nx", "get", "px", g.cfg.AnswerTTL.Milliseconds())
	if errors.Is(call.err, redis.Nil) {
		return record{}, true, call.recovering, nil
	}
	if call.err != nil {
		return record{}, false, time.Time{}, call.err
	}
	held, err = heldRecord(call.val)
	return held, false, call.recovering, err
}

// heldRecord decodes the record a command found under a key.
func heldRecord(val any) (record, error) {
	s, _ := val.(string)
	rec, ok := decodeRecord(s)
	if !ok {
		return record{}, fmt.Errorf("unreadable record %q", s)
	}
	return rec, nil
}

// Complete stores the answer to an admitted key for AnswerTTL.
func (g *Redis) Complete(ctx context.Context, a crowdpass.Admission, answer crowdpass.Answer) error {
	rec := record{status: answer.Status, fp: a.Fingerprint, customer: a.CustomerID, body: answer.Body}
	if err := g.pipe.doCmd(ctx, "set", g.keyKey(a.OrderID), rec.encode(), "px", g.cfg.AnswerTTL.Milliseconds()).err; err != nil {
		return fmt.Errorf("storing answer: %w", err)
	}
	return nil
}

// Abort undoes admitted, an admission whose order could not be queued: the
// taken stock comes back (if the gate still has the category), and the
// in-flight mark, if it is still this attempt's, goes; for a key taken over,
// whose dead attempt's order may be queued, it stays, past its deadline,
// for the next retry to take over at once.
func (g *Redis) Abort(ctx context.Context, a crowdpass.Admission, owner string, admitted crowdpass.AdmissionResult) error {
	keep := ""
	if admitted.TookOver {
		keep = "1"
	}
	err := abortScript.Run(ctx, g.rdb, []string{g.keyKey(a.OrderID), g.StockKey(a.CategoryID)}, owner, admitted.Taken, keep).Err()
	if err != nil {
		return fmt.Errorf("aborting admission: %w", err)
	}
	return nil
}

// Lookup returns what the gate remembers of an order's key; ErrNotFound if nothing.
func (g *Redis) Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error) {
	s, err := g.rdb.Get(ctx, g.keyKey(order)).Result()
	if errors.Is(err, redis.Nil) {
		return crowdpass.KeyRecord{}, crowdpass.ErrNotFound
	}
	if err != nil {
		return crowdpass.KeyRecord{}, fmt.Errorf("looking up order key: %w", err)
	}
	rec, err := heldRecord(s)
	if err != nil {
		return crowdpass.KeyRecord{}, fmt.Errorf("looking up order key: %w", err)
	}
	kr := crowdpass.KeyRecord{CustomerID: rec.customer, Fingerprint: rec.fp, InFlight: rec.status == 0, WrittenBack: rec.owner == restoredOwner}
	if rec.status != 0 {
		kr.Answer = crowdpass.Answer{Status: rec.status, Body: rec.body}
	}
	return kr, nil
}

// queuedKey is the Redis key of the orders of a category that the API
// processes had queued, undecided, when Redis lost its keys (ShareQueued).
func (g *Redis) queuedKey(category uuid.UUID) string {
	return g.cfg.Namespace + "gate:queued:" + category.String()
}

// queuedTTL is how long shared queued orders are kept: a rebuild reads
// them within a recovery, and the workers decide them long before.
const queuedTTL = 10 * time.Minute

// ShareQueued adds orders this process queued in a category and has not
// seen decided (ids and quantities, in the same order) to the set that a
// rebuild of the category's lost stock reads (SharedQueued): after a
// loss, each process shares its own, so that a rebuild elsewhere does not
// sell their tickets again.
func (g *Redis) ShareQueued(ctx context.Context, category uuid.UUID, ids []uuid.UUID, quantities []int32) error {
	if len(ids) == 0 {
		return nil
	}
	key := g.queuedKey(category)
	pipe := g.rdb.Pipeline()
	for start := 0; start < len(ids); start += restoreBatch {
		end := min(start+restoreBatch, len(ids))
		fields := make([]any, 0, 2*(end-start))
		for i := start; i < end; i++ {
			fields = append(fields, ids[i].String(), quantities[i])
		}
		pipe.HSet(ctx, key, fields...)
	}
	pipe.PExpire(ctx, key, queuedTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("sharing queued orders: %w", err)
	}
	return nil
}

// SharedQueued returns the orders of a category that processes shared
// (ShareQueued), as ids and quantities.
func (g *Redis) SharedQueued(ctx context.Context, category uuid.UUID) (ids []uuid.UUID, quantities []int32, err error) {
	all, err := g.rdb.HGetAll(ctx, g.queuedKey(category)).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("reading shared queued orders: %w", err)
	}
	for id, q := range all {
		order, err1 := uuid.Parse(id)
		n, err2 := strconv.ParseInt(q, 10, 32)
		if err1 == nil && err2 == nil {
			ids, quantities = append(ids, order), append(quantities, int32(n))
		}
	}
	return ids, quantities, nil
}

// Recovering reports until when Redis recovers from losing its keys (see
// epoch.lua), zero if it does not: a key it does not hold until then may
// be written back by the process that answered it.
func (g *Redis) Recovering(ctx context.Context) (time.Time, error) {
	call := g.pipe.doCmd(ctx, "exists", g.cfg.Namespace+"gate:epoch")
	if call.err != nil {
		return time.Time{}, fmt.Errorf("checking the gate's epoch: %w", call.err)
	}
	return call.recovering, nil
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

// giveBackScript adds tickets back to a category's gate stock, where the
// stock exists: a stock Redis lost is rebuilt from PostgreSQL, and one
// started from these tickets alone would be far too low.
var giveBackScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1`)

// GiveBack returns tickets that an admission took and no order will hold
// to a category's gate stock, if the stock exists; it reports whether it did.
func (g *Redis) GiveBack(ctx context.Context, category uuid.UUID, tickets int) (bool, error) {
	n, err := giveBackScript.Run(ctx, g.rdb, []string{g.StockKey(category)}, tickets).Int()
	if err != nil {
		return false, fmt.Errorf("giving stock back: %w", err)
	}
	return n == 1, nil
}

// catalogTTL is how long a copy of the catalog is kept after it was last
// saved.
const catalogTTL = 7 * 24 * time.Hour

// SaveCatalog stores a copy of the event catalog (JSON), for an API process
// that starts while PostgreSQL cannot be read; only where there is none if
// !replace.
func (g *Redis) SaveCatalog(ctx context.Context, data []byte, replace bool) error {
	key := g.cfg.Namespace + "catalog"
	var err error
	if replace {
		err = g.rdb.Set(ctx, key, data, catalogTTL).Err()
	} else {
		err = g.rdb.SetNX(ctx, key, data, catalogTTL).Err()
	}
	if err != nil {
		return fmt.Errorf("saving the catalog: %w", err)
	}
	return nil
}

// LoadCatalog returns the copy SaveCatalog stored; ErrNotFound if none.
func (g *Redis) LoadCatalog(ctx context.Context) ([]byte, error) {
	data, err := g.rdb.Get(ctx, g.cfg.Namespace+"catalog").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, crowdpass.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading the catalog: %w", err)
	}
	return data, nil
}

// Ping checks Redis answers.
func (g *Redis) Ping(ctx context.Context) error { return g.rdb.Ping(ctx).Err() }
