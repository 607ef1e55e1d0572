# Two commands do everything on a fresh machine: `make deploy` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

TARGET ?= cpu
MODEL  ?= zoo:demo
RATIO  ?= 0.5
OUT    ?= dist/$(TARGET)/$(subst :,-,$(MODEL))

.PHONY: venv deploy test lint demo-model clean

venv: $(STAMP)

# torch is installed first and pinned: any unpinned request pulls CUDA wheels on CPU machines.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,tvm]'
	@touch $(STAMP)

deploy: $(STAMP)
	$(BIN)/toolchain deploy --model $(MODEL) --ratio $(RATIO) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo-model: $(STAMP)
	$(BIN)/python -m toolchain.models.train_demo

clean:
	rm -rf dist runs .pytest_cache

# Latency measurement (timings serialised with other benchmarks through one lock file when flock exists).
SAMPLES ?= 300
BENCH_LOCK := $(if $(shell command -v flock),flock /tmp/toolchain-bench.lock,)
.PHONY: bench-latency profile

bench-latency: $(STAMP)
	$(BENCH_LOCK) $(BIN)/python benchmarks/latency_predictor.py $(BENCH_ARGS)

profile: $(STAMP)
	$(BENCH_LOCK) $(BIN)/toolchain profile --model $(MODEL) --target $(TARGET) --samples $(SAMPLES) --db runs/latency.db
