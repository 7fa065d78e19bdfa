# Nudge developer commands. `make` (or `make help`) lists them.
# `make test` runs scripts/test.sh, which is exactly what CI (.ci/run) runs.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN_DIR ?= bin
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 30s
# Go benchmarks `make bench-go` runs (a -bench regexp).
BENCH ?= .
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT_MOD := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
# The golangci-lint to run: the one on PATH, if any. To use the pinned version
# without installing it: make lint GOLANGCI_LINT="go run $(GOLANGCI_LINT_MOD)"
GOLANGCI_LINT ?= $(shell command -v golangci-lint 2>/dev/null)

.PHONY: help services test test-short lint vulncheck fuzz bench bench-go demo build tidy clean

help: ## List the targets
	@echo "Usage: make <target> [VAR=value]"
	@echo
	@awk 'BEGIN { FS = ":.*?## " } /^[a-zA-Z0-9_-]+:.*?## / { printf "  %-11s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: FUZZTIME=$(FUZZTIME) BENCH=$(BENCH) GOLANGCI_LINT_VERSION=$(GOLANGCI_LINT_VERSION)"
	@echo "Services:  NUDGE_REDIS_PORT, NUDGE_PG_PORT, NUDGE_STATE_DIR (see scripts/services.sh --help)"

services: ## Make sure Redis and PostgreSQL answer on loopback (installs/starts them if needed)
	scripts/services.sh

test: ## Run the full test suite, as CI does: services, vet, gofmt, go test -race
	scripts/test.sh

test-short: ## Run the quick tests only (go test -short), no services started
	$(GO) test -short ./...

lint: ## go vet, gofmt check, and golangci-lint (if installed)
	$(GO) vet ./...
	@files=$$(find . -name '*.go' -not -path './.git/*' -not -path './vendor/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l); \
	if [[ -n $$files ]]; then echo "gofmt would change:"; echo "$$files"; exit 1; fi
	@if [[ -n "$(GOLANGCI_LINT)" ]]; then \
		echo "$(GOLANGCI_LINT) run ./..."; \
		$(GOLANGCI_LINT) run ./...; \
	else \
		echo "golangci-lint is not installed; skipped. Run the pinned version with:"; \
		echo "  make lint GOLANGCI_LINT=\"go run $(GOLANGCI_LINT_MOD)\""; \
		echo "or install it: go install $(GOLANGCI_LINT_MOD)"; \
	fi

vulncheck: ## govulncheck of every package, when vuln.go.dev can be reached
	bash scripts/vulncheck.sh

fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

bench: services ## Measure Nudge against raw Redis/Postgres: table + bench.json (BENCH_QUICK=1: < 2 min)
	$(GO) run ./cmd/bench -json bench.json

bench-go: ## Run the Go benchmarks and microbenchmarks (go test -bench BENCH -benchmem)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem ./...

demo: services ## Run the demo (go run ./cmd/demo)
	$(GO) run ./cmd/demo

build: ## Build every package; commands go to bin/
	@mkdir -p $(BIN_DIR)
	$(GO) build -o $(BIN_DIR)/ ./...

tidy: ## go mod tidy
	$(GO) mod tidy

clean: ## Remove build and test artifacts (bin/, coverage, bench output)
	rm -rf $(BIN_DIR) coverage.out coverage.html *.coverprofile bench.json bench*.txt
