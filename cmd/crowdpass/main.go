// Command crowdpass runs the CrowdPass roles and its operator tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// A server here holds little heap and allocates a little per
		// request: collecting at 4x the live heap instead of 2x halves the
		// GC's share of the CPU (15% of serve's under rush) for some
		// hundreds of MiB. GOGC set in the environment wins.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is bad input on the command line: exit code 2, nothing done.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// errHelp ends a command whose flags were printed on request.
var errHelp = errors.New("help requested")

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func exitCode(err error, stderr io.Writer) int {
	var usage *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "crowdpass:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "crowdpass:", err)
		return 1
	}
}

const usage = `usage: crowdpass <command> [flags]

commands:
  serve                 api, worker, relay and notifier in one process
  api | worker | relay | notifier
                        one role
  migrate [up|down|status]
                        apply, roll back one, or list the schema migrations
  event create --name N --category NAME:CAPACITY[:PRICE_CENTS] ... [--max-per-customer K]
               [--opens-at RFC3339] [--closes-at RFC3339]
                        create an event and print it as JSON
  token --customer ID [--admin] [--ttl 24h]
                        print a signed bearer token
  rush [--buyers N] [--tickets N] [--target URL] [--json] ...
                        the flash-sale load generator and auditor

Configuration comes from the environment (DATABASE_URL, REDIS_URL, AMQP_URL, HTTP_ADDR,
JWT_SECRET, CROWDPASS_NAMESPACE, WORKER_RATE, WORKER_PREFETCH, WORKER_BATCH, ...); each
command's flags (crowdpass <command> -h) override it.`

// run is the whole program; main only wires it to the process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve", "api", "worker", "relay", "notifier":
		return runRoles(ctx, cmd, rest, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stdout, stderr)
	case "event":
		if len(rest) == 0 || rest[0] != "create" {
			return usagef("usage: crowdpass event create --name N --category NAME:CAPACITY[:PRICE_CENTS] ...")
		}
		return runEventCreate(ctx, rest[1:], getenv, stdout, stderr)
	case "token":
		return runToken(rest, getenv, stdout, stderr)
	case "rush":
		return runRush(ctx, rest, getenv, stdout, stderr)
	case "probe":
		return runProbe(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
}
