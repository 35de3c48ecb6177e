# CrowdPass: `make run` starts the whole system on local services with a demo
# event; `make test` runs every test against the real services.
SHELL := /bin/bash
GO ?= go
BIN := bin/crowdpass

export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/crowdpass?sslmode=disable
export REDIS_URL ?= redis://127.0.0.1:6379/0
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

.PHONY: all build generate check-generated lint services migrate run test bench rush rush-bare

all: build

build:
	$(GO) build -o $(BIN) ./cmd/crowdpass

generate:
	rm -f db/*.go
	$(GO) tool sqlc generate

# check-generated fails when db/ is not what the queries and migrations generate.
check-generated: generate
	@git diff --exit-code -- db/ || { echo "db/ is out of date: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- db/)" || { git status --porcelain -- db/; echo "db/ has untracked generated files"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...

services:
	@./scripts/services.sh

migrate: services build
	$(BIN) migrate up

# The demo event: 50,000 tickets of a World Cup final in four categories, created once.
DEMO_EVENT := --name "World Cup Final" --max-per-customer 4 \
	--category "Category 1:5000:45000" --category "Category 2:15000:25000" \
	--category "Category 3:20000:15000" --category "Category 4:10000:9000"

run: migrate
	@$(BIN) event create --once $(DEMO_EVENT) > bin/demo-event.json
	@./scripts/next-steps.sh bin/demo-event.json
	DEMO_MODE=true $(BIN) serve

# The tests keep their Redis keys in database 15 of the same server (each
# test under its own namespace), apart from make run's deployment in 0: a
# test cleans its namespace with SCAN, which walks the whole database, and a
# rush leaves a million keys behind. A REDIS_URL naming another database
# is used as it is; TEST_REDIS_URL overrides it.
TEST_REDIS_URL ?= $(if $(filter %/0,$(REDIS_URL)),$(REDIS_URL:%/0=%/15),$(if $(findstring /,$(subst redis://,,$(REDIS_URL))),$(REDIS_URL),$(REDIS_URL)/15))

test: services lint check-generated
	REDIS_URL=$(TEST_REDIS_URL) $(GO) test -race -count=1 -timeout 10m ./...

bench: services
	$(GO) test -run '^$$' -bench . -benchtime 3s ./...

# rush runs the full flash sale (1,000,000 buyers, 50,000 tickets) against the
# system `make run` started; run it from a second terminal.
rush: build
	$(BIN) rush --buyers 1000000 --tickets 50000

# rush-bare measures the load generator alone against a built-in 202 handler.
rush-bare: build
	$(BIN) rush --bare --buyers 300000
