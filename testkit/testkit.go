// Package testkit gives each integration test its own PostgreSQL database,
// its own broker and Redis namespace, and tools to break the connections to
// them, all cleaned up when the test ends. Tests reach the services through
// DATABASE_URL, AMQP_URL and REDIS_URL, defaulting to the local ones.
package testkit

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/sql/migrations"
)

// DatabaseURL is the server the tests create their databases on.
func DatabaseURL() string {
	return cmp.Or(os.Getenv("DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/crowdpass?sslmode=disable")
}

// AMQPURL is the broker the tests use.
func AMQPURL() string {
	return cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/")
}

// RedisURL is the Redis the tests use.
func RedisURL() string { return cmp.Or(os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0") }

// Context returns a context that ends with the test, or after a minute.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Logger writes to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// Token returns a short random string, unique enough to name test resources.
func Token() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Namespace returns a fresh CROWDPASS_NAMESPACE and removes the broker
// topology made under it when the test ends.
func Namespace(t testing.TB) string {
	t.Helper()
	ns := "test-" + Token() + "."
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := broker.Dial(ctx, AMQPURL(), "crowdpass-test-cleanup")
		if err != nil {
			t.Logf("cleaning namespace %s: %v", ns, err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_ = broker.Topology{Namespace: ns}.Delete(ch)
		if err := DeleteRedisKeys(ctx, ns); err != nil {
			t.Logf("cleaning namespace %s: %v", ns, err)
		}
	})
	return ns
}

// DeleteRedisKeys deletes every Redis key of a namespace, as a Redis restart
// or flush would for that deployment.
func DeleteRedisKeys(ctx context.Context, ns string) error {
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, ns+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	return rdb.Del(ctx, keys...).Err()
}

// DB is one test's own database, migrated to the latest schema.
type DB struct {
	URL  string
	Pool *pgxpool.Pool
}

// NewDB creates a database for the test from a migrated template and drops
// it when the test ends.
func NewDB(t testing.TB) *DB {
	t.Helper()
	ctx := Context(t)
	tmpl, err := template(ctx)
	if err != nil {
		t.Fatalf("preparing template database: %v", err)
	}
	name := "crowdpass_test_" + Token()
	admin, err := adminConn(ctx)
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tmpl)); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	url := withDatabase(t, DatabaseURL(), name)
	pool, err := postgres.Open(ctx, url, 20)
	if err != nil {
		t.Fatalf("opening test database: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := adminConn(ctx)
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	return &DB{URL: url, Pool: pool}
}

func withDatabase(t testing.TB, url, name string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("parsing DATABASE_URL: %v", err)
	}
	sslmode := "disable"
	if cfg.TLSConfig != nil {
		sslmode = "prefer"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=%s", userinfo(cfg), cfg.Host, cfg.Port, name, sslmode)
}

func userinfo(cfg *pgx.ConnConfig) string {
	if cfg.Password == "" {
		return cfg.User
	}
	return cfg.User + ":" + cfg.Password
}

func adminConn(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(DatabaseURL())
	if err != nil {
		return nil, err
	}
	cfg.Database = "postgres"
	return pgx.ConnectConfig(ctx, cfg)
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// template returns the name of a database migrated to the embedded schema.
// It is named after a hash of the migrations, so a changed schema gets a
// new template, and built under an advisory lock, so parallel test binaries
// build it once.
func template(ctx context.Context) (string, error) {
	templateOnce.Do(func() {
		templateName, templateErr = buildTemplate(ctx)
	})
	return templateName, templateErr
}

func buildTemplate(ctx context.Context) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", err
	}
	name := "crowdpass_tmpl_" + hex.EncodeToString(h.Sum(nil))[:16]

	admin, err := adminConn(ctx)
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(727274)"); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock(727274)") //nolint:errcheck
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", building)); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	cfg, err := pgxpool.ParseConfig(DatabaseURL())
	if err != nil {
		return "", err
	}
	cfg.ConnConfig.Database = building
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	err = postgres.Migrate(ctx, pool, "up", discard{})
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrating template: %w", err)
	}
	// Renaming only once migrated means a crash never leaves a half-built template.
	if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, name)); err != nil {
		return "", err
	}
	return name, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Channel opens a broker channel for the test, closed when it ends.
func Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := broker.Dial(Context(t), AMQPURL(), "crowdpass-test")
	if err != nil {
		t.Fatalf("connecting to the broker: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("opening a channel: %v", err)
	}
	return ch
}
