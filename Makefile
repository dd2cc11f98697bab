# ecst: `make demo` tells the story, `make test` runs the tests.
# Everything a target needs is installed by `make setup` (idempotent).

GO       ?= go
GOFLAGS  ?=
TIMEOUT  ?= 20m
# Packages whose tests touch Kafka: their tests depend, directly or not, on internal/kafkatest.
KAFKA_PKGS = $(shell $(GO) list -test -f '{{if .ForTest}}{{.ForTest}} {{join .Deps " "}}{{end}}' ./... | awk '{for (i = 2; i <= NF; i++) if ($$i ~ /internal\/kafkatest$$/) {print $$1; break}}' | sort -u)

.PHONY: all build setup setup-kafka setup-registry setup-interop setup-compose setup-prometheus setup-chromium alerts-test compose-check docs demo test test-kafka test-registry check bench bench-relay bench-debezium fuzz clean

all: check test

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "-X github.com/ecst-io/ecst/internal/cli.Version=$(VERSION)" -o bin/ecst ./cmd/ecst

## setup: install the PostgreSQL server binaries if they are missing
setup:
	@scripts/setup.sh postgres

## setup-interop: install kcat and python3-venv (internal/interop reads our topics with kcat and
## with confluent-kafka-python in a virtualenv it builds), and bash-completion (internal/cli
## completes with `ecst completion bash`), when missing
setup-interop:
	@scripts/setup.sh interop

## setup-kafka: install Java and Maven if missing, fetch Kafka's jars
setup-kafka:
	@scripts/setup.sh kafka

## demo: the narrated story on a throwaway local stack (bin/ecst demo, built first)
demo: setup
	@echo "make demo: building bin/ecst (a first build takes about 30 s)"
	@$(MAKE) --no-print-directory build
	bin/ecst demo

## test: every test, race detector on, kfake as the broker, a throwaway Postgres; and the alerts'
## unit tests (alerts-test)
test: setup setup-interop setup-compose setup-chromium alerts-test
	$(GO) test $(GOFLAGS) -race -count=1 -timeout $(TIMEOUT) ./...

## test-kafka: the Kafka-touching suites again, against a real Apache Kafka broker
## (-p 1: one package at a time, since a test restarts the shared broker)
test-kafka: setup setup-kafka setup-interop setup-chromium
	@scripts/test-kafka.sh $(GO) test $(GOFLAGS) -race -count=1 -p 1 -timeout $(TIMEOUT) $(KAFKA_PKGS)

## test-registry: the schema suites again, against a real Confluent-compatible registry (Apicurio)
test-registry: setup-registry
	@scripts/test-registry.sh $(GO) test $(GOFLAGS) -race -count=1 -timeout $(TIMEOUT) ./schemas/

## setup-registry: install Java and Maven if missing, fetch the registry
setup-registry:
	@scripts/setup.sh registry

## docs: regenerate the CLI reference, docs/cli (one page per command), and the ecst.yaml
## reference, docs/config.md, after changing a command or a config key
docs:
	$(GO) run ./internal/cli/gendocs $(CURDIR)/docs

## setup-prometheus: install promtool (Debian's prometheus package) if missing
setup-prometheus:
	@scripts/setup.sh prometheus

## setup-chromium: install Debian's chromium if missing: the console's browser tests
## (internal/console) drive it headless with chromedp
setup-chromium:
	@scripts/setup.sh chromium

## alerts-test: deploy/prometheus/alerts.yml is valid, and each alert fires and stays quiet as its
## unit tests in alerts_test.yml say (promtool)
alerts-test: setup-prometheus
	cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml

## setup-compose: install docker-compose if missing (it resolves docker-compose.yml without a daemon)
setup-compose:
	@scripts/setup.sh compose

## compose-check: docker-compose.yml resolves, and has the structure the stack relies on
## (internal/composecheck: health checks, one-shot jobs, pinned images, ports, ECST_* names)
compose-check: setup-compose
	@if command -v docker-compose >/dev/null; then docker-compose -f docker-compose.yml config -q; \
	else docker compose -f docker-compose.yml config -q; fi
	$(GO) test $(GOFLAGS) -count=1 ./internal/composecheck/

# staticcheck and gocyclo, pinned: `go run` fetches and builds each once, then runs it from the
# build cache.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOCYCLO ?= $(GO) run github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0
# A tracked file over this size is a build output or a data dump that belongs elsewhere.
MAX_FILE_BYTES = 1048576

## check: formatting, vet, staticcheck, no tracked file over 1 MiB, and no function over
## cyclomatic complexity 30 outside tests and generated code
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@big=$$(git ls-files -s | sed 's/^[0-9]* \([0-9a-f]*\) [0-9]*	/\1 /' | git cat-file --batch-check='%(objectsize) %(rest)' | \
		awk '$$1 > $(MAX_FILE_BYTES) {print "  " $$2 " (" $$1 " bytes)"}'); \
	if [ -n "$$big" ]; then echo "tracked files over $(MAX_FILE_BYTES) bytes (a build output? git rm --cached it and add it to .gitignore):"; echo "$$big"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@out=$$($(GOCYCLO) -over 30 $$(git ls-files '*.go' | grep -v '_test\.go$$' | grep -v '_gen\.go$$')) || exit 1; \
	if [ -n "$$out" ]; then echo "functions over cyclomatic complexity 30 (split them along their seams):"; echo "$$out"; exit 1; fi

## bench: benchmarks on a durable (fsync on) Postgres; see docs/benchmarks.md
bench: setup
	ECST_TEST_PG_DURABLE=1 $(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./producer/

## bench-relay: the relay against the raw ceiling on a real broker (see docs/benchmarks.md)
bench-relay: setup setup-kafka build
	@scripts/test-kafka.sh sh -c 'ECST_BROKERS=$$ECST_TEST_BROKERS bin/ecst bench relay --log-level warn'

## bench-debezium: ecst's relay side by side with Debezium (Kafka Connect standalone and its Outbox
## Event Router) on one PostgreSQL and a real broker; not part of test or CI (bench/debezium/README.md).
## Flags go through BENCH_DEBEZIUM_FLAGS, e.g. BENCH_DEBEZIUM_FLAGS='-workloads steady -rate 10000'.
bench-debezium: setup setup-kafka
	@bench/debezium/run.sh $(BENCH_DEBEZIUM_FLAGS)

## fuzz: a short fuzzing pass over the decoders and the schema checker
FUZZTIME ?= 15s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeHeaders$$' -fuzztime $(FUZZTIME) ./outbox/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./outbox/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeWire$$' -fuzztime $(FUZZTIME) ./schemas/
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./schemas/

clean:
	rm -rf bin
