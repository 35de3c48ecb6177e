package gate

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// call is one script call, or with script nil one plain command
// (args), waiting for its turn in a pipeline.
type call struct {
	ctx    context.Context // the caller's: a call it gave up on is not sent
	script *redis.Script
	keys   []string
	args   []any
	done   chan callResult
}

type callResult struct {
	val any
	err error
	// recovering is, while the gate's epoch recovers after a loss of
	// Redis's keys (epoch.lua), when it will have: zero otherwise.
	recovering time.Time
}

// pipeliner sends concurrent gate scripts to Redis in pipelines: one write
// and one read carry a whole batch, where each call alone would cost a
// round trip and two system calls on both sides. Under load the batches grow
// by themselves while the previous ones are in flight.
//
// Each pipeline ends with a look at the gate's epoch (epoch.lua), so that
// the calls it carried know, without a round trip of their own, whether
// they ran while Redis recovered from losing its keys.
type pipeliner struct {
	rdb      redis.UniversalClient
	epochKey string
	recovery time.Duration // how long a new epoch recovers
	calls    chan *call
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

const (
	pipelineWorkers = 1
	pipelineMax     = 256
)

func newPipeliner(rdb redis.UniversalClient, epochKey string, recovery time.Duration) *pipeliner {
	p := &pipeliner{rdb: rdb, epochKey: epochKey, recovery: recovery, calls: make(chan *call, 4096), stop: make(chan struct{})}
	for range pipelineWorkers {
		p.wg.Go(p.loop)
	}
	return p
}

func (p *pipeliner) close() {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
	})
}

// do queues a call of script and waits for its result or ctx's end.
func (p *pipeliner) do(ctx context.Context, script *redis.Script, keys []string, args ...any) callResult {
	return p.wait(ctx, &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan callResult, 1)})
}

// doCmd queues one plain command and waits for its result or ctx's end.
func (p *pipeliner) doCmd(ctx context.Context, args ...any) callResult {
	return p.wait(ctx, &call{ctx: ctx, args: args, done: make(chan callResult, 1)})
}

func (p *pipeliner) wait(ctx context.Context, c *call) callResult {
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return callResult{err: ctx.Err()}
	case <-p.stop:
		return callResult{err: redis.ErrClosed}
	}
	select {
	case r := <-c.done:
		return r
	case <-ctx.Done():
		return callResult{err: ctx.Err()}
	}
}

func (p *pipeliner) loop() {
	batch := make([]*call, 0, pipelineMax)
	for {
		select {
		case <-p.stop:
			return
		case c := <-p.calls:
			batch = append(batch[:0], c)
		}
	fill:
		for len(batch) < pipelineMax {
			select {
			case c := <-p.calls:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		p.exec(batch)
	}
}

func (p *pipeliner) exec(batch []*call) {
	// A call whose caller has given up is answered with its context's error
	// and never sent: run late, an admission would hold a key its request
	// already answered otherwise (the slow path, a 503).
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- callResult{err: err}
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(live))
	for i, c := range live {
		if c.script == nil {
			cmds[i] = pipe.Do(ctx, c.args...)
		} else {
			cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
	}
	epoch := epochScript.EvalSha(ctx, pipe, []string{p.epochKey}, p.recovery.Milliseconds())
	_, _ = pipe.Exec(ctx) // errors are per command
	recovering := p.recovering(ctx, epoch)
	for i, c := range live {
		val, err := cmds[i].Result()
		if err != nil && c.script != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// A restarted Redis forgot the script: Run loads it again.
			val, err = c.script.Run(ctx, p.rdb, c.keys, c.args...).Result()
		}
		c.done <- callResult{val: val, err: err, recovering: recovering}
	}
}

// recovering reads the epoch's answer (epoch.lua) that ended a pipeline:
// until when it recovers, in this process's clock, or zero if it does not.
// A look that failed reads as a recovery begun now: the calls may have run
// after a loss. A recovery reads as no longer than a new one lasts, whatever
// Redis's clock did meanwhile.
func (p *pipeliner) recovering(ctx context.Context, epoch *redis.Cmd) time.Time {
	val, err := epoch.Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		val, err = epochScript.Run(ctx, p.rdb, []string{p.epochKey}, p.recovery.Milliseconds()).Result()
	}
	times, _ := val.([]any)
	if err != nil || len(times) != 2 {
		return time.Now().Add(p.recovery)
	}
	until, _ := times[0].(int64)
	now, _ := times[1].(int64)
	if until <= now {
		return time.Time{}
	}
	return time.Now().Add(min(time.Duration(until-now)*time.Millisecond, p.recovery))
}
