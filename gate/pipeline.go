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
}

// pipeliner sends concurrent gate scripts to Redis in pipelines: one write
// and one read carry a whole batch, where each call alone would cost a
// round trip and two system calls on both sides. Under load the batches grow
// by themselves while the previous ones are in flight.
type pipeliner struct {
	rdb   redis.UniversalClient
	calls chan *call
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

const (
	pipelineWorkers = 1
	pipelineMax     = 256
)

func newPipeliner(rdb redis.UniversalClient) *pipeliner {
	p := &pipeliner{rdb: rdb, calls: make(chan *call, 4096), stop: make(chan struct{})}
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
func (p *pipeliner) do(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	return p.wait(ctx, &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan callResult, 1)})
}

// doCmd queues one plain command and waits for its result or ctx's end.
func (p *pipeliner) doCmd(ctx context.Context, args ...any) (any, error) {
	return p.wait(ctx, &call{ctx: ctx, args: args, done: make(chan callResult, 1)})
}

func (p *pipeliner) wait(ctx context.Context, c *call) (any, error) {
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.stop:
		return nil, redis.ErrClosed
	}
	select {
	case r := <-c.done:
		return r.val, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
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
			c.done <- callResult{nil, err}
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
	_, _ = pipe.Exec(ctx) // errors are per command
	for i, c := range live {
		val, err := cmds[i].Result()
		if err != nil && c.script != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// A restarted Redis forgot the script: Run loads it again.
			val, err = c.script.Run(ctx, p.rdb, c.keys, c.args...).Result()
		}
		c.done <- callResult{val, err}
	}
}
