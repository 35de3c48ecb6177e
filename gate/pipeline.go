package gate

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// admitCall is one Admit waiting for its turn in a pipeline.
type admitCall struct {
	keys []string
	args []any
	done chan admitResult
}

type admitResult struct {
	vals []any
	err  error
}

// pipeliner sends concurrent Admit scripts to Redis in pipelines: one write
// and one read carry a whole batch, where each call alone would cost a
// round trip and two system calls on both sides. Under load the batches grow
// by themselves while the previous ones are in flight.
type pipeliner struct {
	rdb   redis.UniversalClient
	calls chan *admitCall
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

const (
	pipelineWorkers = 1
	pipelineMax     = 256
)

func newPipeliner(rdb redis.UniversalClient) *pipeliner {
	p := &pipeliner{rdb: rdb, calls: make(chan *admitCall, 4096), stop: make(chan struct{})}
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

// do queues a call and waits for its result or ctx's end.
func (p *pipeliner) do(ctx context.Context, keys []string, args ...any) ([]any, error) {
	c := &admitCall{keys: keys, args: args, done: make(chan admitResult, 1)}
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.stop:
		return nil, redis.ErrClosed
	}
	select {
	case r := <-c.done:
		return r.vals, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeliner) loop() {
	batch := make([]*admitCall, 0, pipelineMax)
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

func (p *pipeliner) exec(batch []*admitCall) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = admitScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	for i, c := range batch {
		vals, err := cmds[i].Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// A restarted Redis forgot the script: Run loads it again.
			vals, err = admitScript.Run(ctx, p.rdb, c.keys, c.args...).Slice()
		}
		c.done <- admitResult{vals, err}
	}
}
