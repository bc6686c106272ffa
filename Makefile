# Everything runs from a virtual environment in .venv, made and filled on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
ARGS ?=
# protoc finds its mypy plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH: the environment's first.
PROTOC := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc

.PHONY: install run test lint proto check-proto bench bench-http bench-files bench-overhead clean

# One install stamp per set of extras, so that each target installs only what it needs: `make run`
# the package alone (what `pip install .` gives users), `make test` the test tools too, `make install`
# (and `make proto`) the stub generators as well. A larger set marks the smaller ones as installed.
EXTRAS_run :=
EXTRAS_test := [test]
EXTRAS_dev := [dev]
SUBSETS_test := $(VENV)/.installed-run
SUBSETS_dev := $(VENV)/.installed-run $(VENV)/.installed-test

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.$(EXTRAS_$*)'
	touch $@ $(SUBSETS_$*)

install: $(VENV)/.installed-dev

## run: serve gRPC on 127.0.0.1:50051 and HTTP (REST API, web UI) on 127.0.0.1:8080 with the SQLite file registry.db (pass flags with ARGS="...")
run: $(VENV)/.installed-run
	$(BIN)/model-registry-server $(ARGS)

## test: the whole suite; PostgreSQL too when MODEL_REGISTRY_TEST_POSTGRES_URL is set
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

## proto: regenerate the Python stubs (and mypy .pyi) beside the .proto files, and the HTTP API's OpenAPI document
proto: $(VENV)/.installed-dev
	$(PROTOC) -I protos --python_out=protos --mypy_out=protos protos/modelregistry/v1/*.proto
	$(PROTOC) -I protos --grpc_python_out=protos --mypy_grpc_out=protos \
		protos/modelregistry/v1/registry_service.proto
	$(BIN)/python -m registry_server.openapi > protos/openapi.json

## check-proto: fail when the committed stubs (or protos/openapi.json) differ from what `make proto` generates
check-proto: proto
	@test -z "$$(git status --porcelain -- protos)" || { git status --short -- protos; echo "stale stubs: run make proto and commit"; exit 1; }

$(BUF):
	npm install --no-save --silent @bufbuild/buf

## lint: buf lint (STANDARD) and buf format on the protos, mypy on the three packages, ruff check
lint: $(BUF) $(VENV)/.installed-dev
	$(BUF) lint && $(BUF) format -d --exit-code
	$(BIN)/mypy
	$(BIN)/ruff check

## bench: throughput and latency beside a no-op gRPC baseline, scale, memory, start-up (README.md, Performance)
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench $(ARGS)

## bench-http: GetModel, GetModelVersion, CreateModelVersion over HTTP/JSON beside gRPC, 1 and 16 in flight (bench/http.py)
bench-http: $(VENV)/.installed-run
	$(BIN)/python -m bench.http $(ARGS)

## bench-files: checkpoint upload/download MB/s beside a plain file copy (bench/files.py)
bench-files: $(VENV)/.installed-run
	$(BIN)/python -m bench.files $(ARGS)

## bench-overhead: GetModel calls/s and server CPU per call with metrics and tracing off and on (bench/overhead.py)
bench-overhead: $(VENV)/.installed-test
	$(BIN)/python -m bench.overhead $(ARGS)

clean:
	rm -rf $(VENV) node_modules build *.egg-info
