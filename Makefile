# Everything runs from a virtual environment in .venv, made and filled on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
ARGS ?=

.PHONY: install run test lint proto check-proto bench bench-files clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: serve on 127.0.0.1:50051 with the SQLite file registry.db (pass flags with ARGS="...")
run: install
	$(BIN)/model-registry-server $(ARGS)

## test: the whole suite; PostgreSQL too when MODEL_REGISTRY_TEST_POSTGRES_URL is set
test: install
	$(BIN)/python -m pytest $(ARGS)

## proto: regenerate the Python stubs (and mypy .pyi) beside the .proto files
proto: install
	$(BIN)/python -m grpc_tools.protoc -I protos --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--python_out=protos --mypy_out=protos protos/modelregistry/v1/*.proto
	$(BIN)/python -m grpc_tools.protoc -I protos --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--grpc_python_out=protos --mypy_grpc_out=protos \
		protos/modelregistry/v1/registry_service.proto

## check-proto: fail when the committed stubs differ from what `make proto` generates
check-proto: proto
	@test -z "$$(git status --porcelain -- protos)" || { git status --short -- protos; echo "stale stubs: run make proto and commit"; exit 1; }

$(BUF):
	npm install --no-save --silent @bufbuild/buf

## lint: buf lint (STANDARD) and buf format on the protos
lint: $(BUF)
	$(BUF) lint && $(BUF) format -d --exit-code

## bench: throughput and latency beside a no-op gRPC baseline, scale, memory, start-up (README.md, Performance)
bench: install
	$(BIN)/python -m bench $(ARGS)

## bench-files: checkpoint upload/download MB/s beside a plain file copy (bench/files.py)
bench-files: install
	$(BIN)/python -m bench.files $(ARGS)

clean:
	rm -rf $(VENV) node_modules build *.egg-info
