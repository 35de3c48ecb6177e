package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/postgres"
)

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	command := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	fs := newFlagSet("migrate")
	cfg.connectionFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	switch command {
	case "up", "down", "status":
	default:
		return usagef("migrate: unknown command %q (want up, down or status)", command)
	}
	if err := checkDatabaseURL(cfg.DatabaseURL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if command == "up" {
		// A fresh server has no crowdpass database yet; up makes one.
		if err := postgres.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return postgres.Migrate(ctx, pool, command, stdout)
}

// checkDatabaseURL says at once, as bad input (exit 2), that a
// DATABASE_URL does not parse, as the roles do; one that parses but cannot
// be reached fails later, with exit 1.
func checkDatabaseURL(url string) error {
	if _, err := pgxpool.ParseConfig(url); err != nil {
		return usagef("DATABASE_URL: %v", err)
	}
	return nil
}

// categoriesFlag collects repeated --category NAME:CAPACITY[:PRICE_CENTS].
type categoriesFlag []crowdpass.CategorySpec

func (c *categoriesFlag) String() string { return "" }

func (c *categoriesFlag) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 2 {
		return errors.New("want NAME:CAPACITY[:PRICE_CENTS]")
	}
	spec := crowdpass.CategorySpec{}
	// A name may hold colons; the numbers are the last one or two parts.
	last := func(i int) (int64, bool) {
		n, err := strconv.ParseInt(parts[len(parts)-i], 10, 64)
		return n, err == nil
	}
	capacity, ok := last(1)
	if !ok {
		if _, capacityOK := last(2); len(parts) >= 3 && capacityOK {
			return fmt.Errorf("price %q is not a whole number of cents", parts[len(parts)-1])
		}
		return fmt.Errorf("capacity %q is not a whole number", parts[len(parts)-1])
	}
	nameParts := len(parts) - 1
	if len(parts) >= 3 {
		if c2, ok := last(2); ok {
			spec.PriceCents, capacity = capacity, c2
			nameParts = len(parts) - 2
		}
	}
	if capacity > crowdpass.MaxCapacity || capacity < 0 {
		return fmt.Errorf("capacity must be between 1 and %d", crowdpass.MaxCapacity)
	}
	spec.Name = strings.Join(parts[:nameParts], ":")
	spec.Capacity = int(capacity)
	*c = append(*c, spec)
	return nil
}

// timeFlag is an optional RFC 3339 instant.
type timeFlag struct{ t *crowdpass.Time }

func (f *timeFlag) String() string {
	if f.t == nil {
		return ""
	}
	return f.t.String()
}

func (f *timeFlag) Set(v string) error {
	t, err := crowdpass.ParseTime(v)
	if err != nil {
		return errors.New("want an RFC 3339 time such as 2026-07-19T18:00:00Z")
	}
	f.t = &t
	return nil
}

func runEventCreate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	fs := newFlagSet("event create")
	cfg.connectionFlags(fs)
	var (
		spec       crowdpass.EventSpec
		categories categoriesFlag
		opens      timeFlag
		closes     timeFlag
		limit      int
		once       bool
	)
	fs.StringVar(&spec.Name, "name", "", "event name (required)")
	fs.Var(&categories, "category", "NAME:CAPACITY[:PRICE_CENTS], repeat for each category (at least one)")
	fs.IntVar(&limit, "max-per-customer", crowdpass.DefaultMaxPerCustomer, "most tickets one customer may buy for the event")
	fs.Var(&opens, "opens-at", "start of the sale, RFC 3339 (default now)")
	fs.Var(&closes, "closes-at", "end of the sale, RFC 3339 (default never)")
	fs.BoolVar(&once, "once", false, "if an event of this name exists, print it instead of creating another")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	spec.Categories, spec.OpensAt, spec.ClosesAt, spec.MaxPerCustomer = categories, opens.t, closes.t, &limit
	if err := spec.Validate(); err != nil {
		return usagef("event create: %s", describe(err))
	}

	if err := checkDatabaseURL(cfg.DatabaseURL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := postgres.NewStore(pool, nil)
	if once {
		event, err := store.EventByName(ctx, spec.Name)
		if err == nil {
			return json.NewEncoder(stdout).Encode(event)
		}
		if crowdpass.Code(err) != crowdpass.ENotFound {
			return fmt.Errorf("looking up event %q: %w", spec.Name, err)
		}
	}
	event, err := store.CreateEvent(ctx, spec)
	if err != nil {
		return fmt.Errorf("creating event: %w", err)
	}
	return json.NewEncoder(stdout).Encode(event)
}

func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token")
	var (
		customer string
		admin    bool
		ttl      time.Duration
	)
	fs.StringVar(&customer, "customer", "", "customer id, the token's sub (required)")
	fs.BoolVar(&admin, "admin", false, "mark the bearer as an operator")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if customer == "" || len(customer) > crowdpass.MaxCustomerIDLen {
		return usagef("token: --customer must be 1 to %d bytes", crowdpass.MaxCustomerIDLen)
	}
	// exp is in whole seconds: a shorter lifetime is a token expired at birth.
	if ttl < time.Second {
		return usagef("--ttl must be at least 1s")
	}
	authority, err := auth.New([]byte(jwtSecret(getenv("JWT_SECRET"), stderr)), nil)
	if err != nil {
		return err
	}
	token, err := authority.Issue(customer, admin, ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// jwtSecret returns secret, or the development default with a warning.
func jwtSecret(secret string, stderr io.Writer) string {
	if secret != "" {
		return secret
	}
	fmt.Fprintln(stderr, "crowdpass: warning: JWT_SECRET is not set; using the development secret, never do this in production")
	return devJWTSecret
}

// describe spells out a domain error, field by field.
func describe(err error) string {
	var e *crowdpass.Error
	if !errors.As(err, &e) || len(e.Fields) == 0 {
		return err.Error()
	}
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	return strings.Join(msgs, "; ")
}

var _ flag.Value = (*categoriesFlag)(nil)

// runProbe GETs a URL and fails unless it answers 200: the container health
// check, for images that have no curl.
func runProbe(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("usage: crowdpass probe URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return usagef("probe: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe: %s answered %s", args[0], resp.Status)
	}
	return nil
}
