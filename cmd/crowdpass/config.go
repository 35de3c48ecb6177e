package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// devJWTSecret lets a fresh checkout run; serve warns loudly when it is used.
const devJWTSecret = "crowdpass-development-secret-do-not-use-in-production"

// config is every setting, read once from the environment and then from flags.
type config struct {
	DatabaseURL    string
	RedisURL       string
	AMQPURL        string
	HTTPAddr       string
	JWTSecret      string
	Namespace      string
	WorkerRate     float64
	WorkerPrefetch int
	WorkerBatch    int
	IdempotencyTTL time.Duration
	PublishTimeout time.Duration
	// OutboxRetention, if positive, is how long published outbox rows are
	// kept; zero (the default, or OUTBOX_RETENTION=0) keeps them for ever.
	OutboxRetention time.Duration
	AllowedOrigins  []string
	// Demo hands out tokens for fresh demo customers at POST /demo/token
	// (DEMO_MODE=true). Never in production.
	Demo bool
	// PprofAddr, when set, serves net/http/pprof there (PPROF_ADDR).
	PprofAddr string
	LogLevel  slog.Level
	LogFormat string
	// HTTPAddrSet tells whether HTTP_ADDR or --http-addr was given: roles
	// without a public API serve their health endpoints only then, so that
	// several of them can run on one host.
	HTTPAddrSet bool
}

// loadConfig reads the environment; errors name the variable at fault.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		DatabaseURL:    cmp.Or(getenv("DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/crowdpass?sslmode=disable"),
		RedisURL:       cmp.Or(getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"),
		AMQPURL:        cmp.Or(getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/"),
		HTTPAddr:       cmp.Or(getenv("HTTP_ADDR"), ":8080"),
		JWTSecret:      getenv("JWT_SECRET"),
		Namespace:      getenv("CROWDPASS_NAMESPACE"),
		LogFormat:      cmp.Or(getenv("LOG_FORMAT"), "text"),
		HTTPAddrSet:    getenv("HTTP_ADDR") != "",
		PprofAddr:      getenv("PPROF_ADDR"),
		IdempotencyTTL: 24 * time.Hour,
		PublishTimeout: 5 * time.Second,
	}
	var errs []string
	parse := func(name string, f func(string) error) {
		if v := getenv(name); v != "" {
			if err := f(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	}
	parse("WORKER_RATE", func(v string) (err error) { c.WorkerRate, err = parseNonNegFloat(v); return })
	parse("WORKER_PREFETCH", func(v string) (err error) { c.WorkerPrefetch, err = parseNonNegInt(v); return })
	parse("WORKER_BATCH", func(v string) (err error) { c.WorkerBatch, err = parseNonNegInt(v); return })
	parse("IDEMPOTENCY_TTL", func(v string) (err error) {
		if c.IdempotencyTTL, err = parsePositiveDuration(v); err == nil && c.IdempotencyTTL < 24*time.Hour {
			err = fmt.Errorf("the contract keeps keys at least 24h")
		}
		return err
	})
	parse("PUBLISH_TIMEOUT", func(v string) (err error) { c.PublishTimeout, err = parsePositiveDuration(v); return })
	parse("OUTBOX_RETENTION", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration such as 168h, or 0 to keep published rows for ever")
		}
		c.OutboxRetention = d
		return nil
	})
	parse("ALLOWED_ORIGINS", func(v string) error {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.AllowedOrigins = append(c.AllowedOrigins, o)
			}
		}
		return nil
	})
	parse("DEMO_MODE", func(v string) (err error) { c.Demo, err = strconv.ParseBool(v); return })
	parse("LOG_LEVEL", func(v string) error { return c.LogLevel.UnmarshalText([]byte(v)) })
	if len(errs) > 0 {
		return c, usagef("bad environment: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

func parseNonNegInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a whole number >= 0")
	}
	return n, nil
}

func parsePositiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 24h")
	}
	return d, nil
}

func parseNonNegFloat(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f != f {
		return 0, fmt.Errorf("want a number >= 0")
	}
	return f, nil
}

// connectionFlags lets flags override where the services are.
func (c *config) connectionFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL (DATABASE_URL)")
	fs.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "Redis URL (REDIS_URL)")
	fs.StringVar(&c.AMQPURL, "amqp-url", c.AMQPURL, "RabbitMQ URL (AMQP_URL)")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "prefix of every queue, exchange and Redis key (CROWDPASS_NAMESPACE)")
}

func (c *config) roleFlags(fs *flag.FlagSet) {
	c.connectionFlags(fs)
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address (HTTP_ADDR)")
	fs.BoolVar(&c.Demo, "demo", c.Demo, "demo mode: POST /demo/token hands out tokens; never in production (DEMO_MODE)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", c.PprofAddr, "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (PPROF_ADDR)")
	fs.Float64Var(&c.WorkerRate, "worker-rate", c.WorkerRate, "orders decided per second per worker, 0 = unlimited (WORKER_RATE)")
	fs.IntVar(&c.WorkerPrefetch, "worker-prefetch", c.WorkerPrefetch, "unacknowledged orders per worker, 0 = 2x batch (WORKER_PREFETCH)")
	fs.IntVar(&c.WorkerBatch, "worker-batch", c.WorkerBatch, "orders per decision transaction, 0 = 50 (WORKER_BATCH)")
}

func (c config) validateRole() error {
	if c.WorkerRate < 0 || c.WorkerPrefetch < 0 || c.WorkerBatch < 0 {
		return usagef("worker rate, prefetch and batch must be >= 0")
	}
	if c.WorkerBatch > 10_000 {
		return usagef("worker batch must be at most 10000")
	}
	return nil
}

func (c config) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newFlagSet returns a flag set that reports errors instead of exiting.
// The flag package's own messages are silenced: parseFlags reports one line,
// and prints the flags only when asked with -h.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args, turning every flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintf(stderr, "usage of crowdpass %s:\n", fs.Name())
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return errHelp
		}
		return usagef("%s: %v (see crowdpass %s -h)", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}
