# Nuell: `make help` lists every target. `make run` and `make test` are all
# a newcomer needs; every target installs what it is missing first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := proto/node_modules/.bin/buf
CARGO ?= cargo
CARGO_MANIFEST := --manifest-path rust_compute/Cargo.toml
# Set to any buf input (e.g. '.git#tag=v1.0.0') to check breaking changes against it.
BREAKING_AGAINST ?=
COMPUTE_BIN := rust_compute/target/release/rust_compute

PROTO_FILES := $(shell find proto/nuell proto/third_party -name '*.proto' 2>/dev/null)
RUST_SOURCES := $(shell find rust_compute/src rust_compute/build.rs rust_compute/Cargo.toml rust_compute/Cargo.lock 2>/dev/null)
PY_GEN_DIR := py_gateway/src
PY_GEN_STAMP := $(PY_GEN_DIR)/nuell/.generated
# The whole contract as one descriptor set, comments included: the edge's
# REST transcoding and the OpenAPI document are made from it.
CONTRACT := build/contract.binpb
OPENAPI := build/openapi.json
WEB_SOURCES := $(shell find web/src -path web/src/gen -prune -o -type f -print 2>/dev/null) \
	$(wildcard web/index.html web/build.mjs web/buf.gen.yaml web/tsconfig.json)
WEB_PAGE := web/dist/index.html

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- toolchains

$(VENV)/.installed: py_gateway/pyproject.toml py_gateway/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11 (or set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c py_gateway/constraints.txt -e 'py_gateway[dev]'
	touch $@

proto/node_modules/.installed: proto/package.json proto/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm not found: install Node.js 20 with npm" >&2; exit 1; }
	cd proto && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/node_modules/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm not found: install Node.js 20 with npm" >&2; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: deps
deps: $(VENV)/.installed proto/node_modules/.installed web/node_modules/.installed ## Install the Python venv, the contract tools (buf) and the web toolchain

# ------------------------------------------------------------------- build

$(PY_GEN_STAMP): $(PROTO_FILES) $(VENV)/.installed
	rm -rf $(PY_GEN_DIR)/nuell $(PY_GEN_DIR)/buf
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iproto -Iproto/third_party \
		--python_out=$(PY_GEN_DIR) --grpc_python_out=$(PY_GEN_DIR) \
		--mypy_out=quiet:$(PY_GEN_DIR) --mypy_grpc_out=quiet:$(PY_GEN_DIR) \
		$(patsubst proto/%,%,$(filter proto/nuell/%,$(PROTO_FILES))) buf/validate/validate.proto
	touch $@

# With google.rpc's error details, so the edge can write them out as JSON;
# and a copy without the comments, which the edge's config carries inline.
CONTRACT_FILES = $(patsubst proto/%,%,$(filter proto/nuell/%,$(PROTO_FILES))) google/rpc/error_details.proto
$(CONTRACT): $(PROTO_FILES) $(VENV)/.installed
	mkdir -p $(dir $@)
	$(PY) -m grpc_tools.protoc -Iproto -Iproto/third_party --include_imports \
		--descriptor_set_out=$(CONTRACT:.binpb=-bare.binpb) $(CONTRACT_FILES)
	$(PY) -m grpc_tools.protoc -Iproto -Iproto/third_party --include_imports --include_source_info \
		--descriptor_set_out=$@ $(CONTRACT_FILES)

# The REST API's OpenAPI document: the edge serves it, and the page at /api/.
$(OPENAPI): $(CONTRACT) $(PY_GEN_STAMP) py_gateway/src/nuell_gateway/openapi.py py_gateway/src/nuell_gateway/authz.py
	$(PY) -m nuell_gateway.openapi $(CONTRACT) --out $@

.PHONY: gen
gen: $(PY_GEN_STAMP) $(CONTRACT) $(OPENAPI) ## Generate the Python stubs (and type stubs), build/contract.binpb and build/openapi.json from proto/

$(COMPUTE_BIN): $(RUST_SOURCES) $(PROTO_FILES)
	@command -v $(CARGO) >/dev/null || { echo "make: cargo not found: install Rust (rustup) 1.95 or newer" >&2; exit 1; }
	$(CARGO) build --release --locked $(CARGO_MANIFEST)

$(WEB_PAGE): $(WEB_SOURCES) $(PROTO_FILES) web/node_modules/.installed proto/node_modules/.installed
	cd web && npm run --silent build

.PHONY: web
web: $(WEB_PAGE) ## Generate the TypeScript client and build the browser page (web/dist)

.PHONY: build
build: gen $(COMPUTE_BIN) web ## Generate code, build rust_compute (release) and the browser page

# --------------------------------------------------------------------- run

.PHONY: run
run: build ## Run the whole stack: PostgreSQL (embedded unless DATABASE_URL), compute, gateway, Envoy, the page on :3000
	$(PY) -m deploy.run_stack

.PHONY: migrate
migrate: gen ## Apply database migrations (DATABASE_URL, else the embedded PostgreSQL under .data/)
	$(PY) -m deploy.run_stack --migrate-only

# -------------------------------------------------------------------- test

.PHONY: test
test: proto-check build test-rust test-python test-deploy ## Every test: contract, Rust, gateway, Envoy, the stack and the browser

.PHONY: proto-check
proto-check: proto/node_modules/.installed ## buf lint and buf breaking (against main, or the previous commit on main)
	$(BUF) lint
	@# On a branch, compare with main; on main itself (a clean clone of main
	@# has nothing else), with the previous commit.
	@if [ -n "$(BREAKING_AGAINST)" ]; then against="$(BREAKING_AGAINST)"; \
	elif [ "$$(git rev-parse --abbrev-ref HEAD)" != main ] && git rev-parse -q --verify main >/dev/null; then \
		against='.git#branch=main'; \
	elif git rev-parse -q --verify HEAD~1 >/dev/null; then against='.git#ref=HEAD~1'; \
	else echo "buf breaking: no earlier commit to compare with"; exit 0; fi; \
	echo "$(BUF) breaking --against '$$against'"; \
	$(BUF) breaking --against "$$against"

.PHONY: test-rust
test-rust: ## rust_compute's unit and black-box tests
	$(CARGO) test --release --locked $(CARGO_MANIFEST)

.PHONY: test-python
test-python: build ## py_gateway's tests (TEST_DATABASE_URL, else DATABASE_URL, else embedded PostgreSQL)
	cd py_gateway && ../$(PY) -m pytest

.PHONY: test-deploy
test-deploy: build ## Envoy config and the real stack: grpcurl, gRPC-Web, CORS, limits, TLS, runner, Chromium
	$(PY) -m pytest deploy/tests

# -------------------------------------------------------------------- lint

.PHONY: lint
lint: gen web proto/node_modules/.installed ## buf lint, ruff, mypy, tsc, clippy (warnings are errors), rustfmt
	$(BUF) lint
	$(VENV)/bin/ruff check py_gateway deploy bench
	$(VENV)/bin/ruff format --check py_gateway deploy bench
	cd py_gateway && ../$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict bench
	cd web && npm run --silent typecheck
	$(CARGO) clippy --locked --all-targets $(CARGO_MANIFEST) -- -D warnings
	$(CARGO) fmt --check $(CARGO_MANIFEST)

.PHONY: fmt
fmt: $(VENV)/.installed ## Format Python and Rust sources in place
	$(VENV)/bin/ruff format py_gateway deploy bench
	$(VENV)/bin/ruff check --fix py_gateway deploy bench
	$(CARGO) fmt $(CARGO_MANIFEST)

# ------------------------------------------------------------------- bench

.PHONY: bench
bench: build ## Benchmarks that print figures (see bench/README.md)
	$(PY) -m bench

# A PostgreSQL server it may create a database on; the first run loads the
# posts (about 7 minutes for 1M here), later runs reuse them.
SEARCH_POSTS ?= 1000000
SEARCH_DATABASE ?= postgresql://postgres@127.0.0.1:5432/nuell_search_1m

.PHONY: bench-search
bench-search: gen $(COMPUTE_BIN) ## Search and similar posts at SEARCH_POSTS posts (bench/README.md, "Search")
	$(PY) -m bench.search --posts $(SEARCH_POSTS) --database $(SEARCH_DATABASE)

# ------------------------------------------------------------------- clean

.PHONY: clean
clean: ## Remove generated code and build output (keeps .data/ and the venv)
	rm -rf $(PY_GEN_DIR)/nuell $(PY_GEN_DIR)/buf rust_compute/target web/src/gen web/dist

.PHONY: distclean
distclean: clean ## Also remove the venv, node_modules and local data under .data/
	rm -rf $(VENV) proto/node_modules web/node_modules .data
