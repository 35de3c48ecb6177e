// Package postgres is the PostgreSQL adapter: it opens pools, runs the goose
// migrations and turns the sqlc rows of package db into domain types.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/db"
	"github.com/crowdpass/crowdpass/sql/migrations"
)

// Open connects a pool and checks it answers within the context's deadline.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	pool, err := NewPool(url, maxConns)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("reaching database: %w", err)
	}
	return pool, nil
}

// Migrate runs a goose command ("up", "down" or "status") with the embedded
// migrations. Concurrent callers are serialized by a PostgreSQL advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, command string, out io.Writer) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return migrate(ctx, db, command, out)
}

func migrate(ctx context.Context, db *sql.DB, command string, out io.Writer) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("creating migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	switch command {
	case "up":
		results, err := provider.Up(ctx)
		for _, r := range results {
			fmt.Fprintf(out, "migrated up %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		if err != nil {
			return fmt.Errorf("migrating up: %w", err)
		}
		if len(results) == 0 {
			fmt.Fprintln(out, "schema is up to date")
		}
	case "down":
		r, err := provider.Down(ctx)
		if err != nil {
			return fmt.Errorf("migrating down: %w", err)
		}
		fmt.Fprintf(out, "migrated down %s\n", r.Source.Path)
	case "status":
		statuses, err := provider.Status(ctx)
		if err != nil {
			return fmt.Errorf("reading migration status: %w", err)
		}
		for _, s := range statuses {
			applied := "pending"
			if s.State == goose.StateApplied {
				applied = "applied " + s.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(out, "%-40s %s\n", s.Source.Path, applied)
		}
	default:
		return fmt.Errorf("unknown migrate command %q (want up, down or status)", command)
	}
	return nil
}

// translate turns driver errors into domain errors; it is the one place that
// knows pgx's error types. Errors it does not recognize are returned as they
// are: their code is EInternal, which callers (the worker) treat as
// transient and retry.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return crowdpass.ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.SQLState()[:2] {
		case "22", "23": // data exception, integrity constraint violation
			return &crowdpass.Error{Code: crowdpass.EConflict, Message: pgErr.Message}
		}
	}
	return err
}

// EnsureDatabase creates the database that url names if it does not exist,
// connecting to the server's "postgres" database to do so.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parsing database url: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reaching database server: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created meanwhile by another process
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// IdleInTransactionTimeout is how long the server lets a session of ours
// sit idle inside a transaction before it ends it, where nothing else sets
// idle_in_transaction_session_timeout (the server, the role, the database
// or the URL). A process that stops mid-transaction (SIGSTOP, a frozen VM)
// would otherwise hold its locks for as long as it is stopped: a worker
// holds its categories' rows from its stock read to its write, so every
// other worker would wait for them; a relay holds the outbox rows it
// claimed while it publishes them (at most its publish timeout, 10s),
// which the other relays skip.
const IdleInTransactionTimeout = "30s"

// NewPool returns a pool without connecting: connections are made as they
// are needed, so a role starts even while the database is down. Its
// sessions have IdleInTransactionTimeout.
func NewPool(url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		// uuid.UUID is encoded as 16 bytes, not through its text form:
		// the text round trip was 4% of serve's CPU in a rush.
		pgxuuid.Register(conn.TypeMap())
		// Set per session rather than as a startup parameter, which a
		// pooler such as PgBouncer refuses and which would override a
		// DBA's setting for the role or database.
		return db.New(conn).SessionIdleTimeoutDefault(ctx, IdleInTransactionTimeout)
	}
	return pgxpool.NewWithConfig(context.Background(), cfg)
}
