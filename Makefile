# Two commands do everything on a fresh machine: `make deploy` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Defaults are the CLI's: make passes an option only when its variable is set (PRECISION=int8, RATIO=0.3, ...).
# TARGET is read from toolchain/defaults.py (where the CLI takes it from), as make decides on it below.
TARGET ?= $(shell sed -n 's/^TARGET[^=]*= *"\([^"]*\)".*/\1/p' toolchain/defaults.py)
MODEL  ?= zoo:demo
PRECISION ?=
# On cpu (or a board reached through RPC_TRACKER/RPC_KEY) `make deploy` prunes to a latency budget of 50% of the
# dense model's measured latency (BUDGET_MS=x for an absolute one): make's own choice, the CLI has no default
# budget. Without a reachable board the CLI's --ratio is used (RATIO=x to change it).
BUDGET_RATIO ?= 0.5
BUDGET_MS ?=
RATIO ?=
# A budget needs measurements on the target: this host for cpu, the board through RPC_TRACKER/RPC_KEY otherwise.
DEPLOY_BUDGET = $(if $(or $(filter cpu,$(TARGET)),$(RPC_TRACKER)),$(if $(BUDGET_MS),--budget-ms $(BUDGET_MS),--budget-ratio $(BUDGET_RATIO)),$(if $(RATIO),--ratio $(RATIO)))
TEST_WORKERS ?= 2

.PHONY: venv deploy test lint demo-model clean

venv: $(STAMP)

# torch and torchvision are installed first as one exact pair (a mismatched torchvision does not import);
# any unpinned request would pull another multi-GB build. On x86_64 + Python 3.11 this pair is read from the
# machine's local wheel store (~5.5 GB in the venv: a CUDA build that runs on the CPU).
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PAIR)
	$(BIN)/python -m pip install -q -e '.[dev,tvm,models,ray]'
	@touch $(STAMP)

# TARGET: a device from the device table (`toolchain targets` lists them; jetson = jetson-orin).
# Jetson bundles need the aarch64 cross compiler, installed through apt when missing.
deploy: $(STAMP) $(if $(filter jetson%,$(TARGET)),cross-tools)
	$(BIN)/toolchain deploy --model $(MODEL) $(if $(TARGET),--target $(TARGET)) $(if $(PRECISION),--precision $(PRECISION)) \
		$(DEPLOY_BUDGET) $(if $(OUT),--out $(OUT)) $(if $(RPC_TRACKER),--rpc-tracker $(RPC_TRACKER) --rpc-key $(RPC_KEY))

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .

demo-model: $(STAMP)
	$(BIN)/python -m toolchain.models.train_demo

clean:
	rm -rf dist runs .pytest_cache

# Cross compiler for the Jetson (aarch64) TVM build, installed through apt when missing.
CROSS_CXX ?= aarch64-linux-gnu-g++
SUDO      := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: cross-tools
cross-tools:
	@command -v $(CROSS_CXX) >/dev/null 2>&1 || { \
	  echo "installing g++-aarch64-linux-gnu through apt (needed for the Jetson cross build)"; \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++-aarch64-linux-gnu; } || { \
	    echo "error: could not install g++-aarch64-linux-gnu through apt; install it by hand (apt-get install g++-aarch64-linux-gnu) to cross-compile for the Jetson" >&2; \
	    exit 2; }; }
	@$(CROSS_CXX) --version | head -n 1

# Benchmark report (HTML + Markdown) from whatever outputs exist; missing ones are reported as missing.
REPORT_RUNS ?= runs/ benchmarks/results/ dist/
REPORT_OUT  ?= report/

.PHONY: report
report: $(STAMP)
	@mkdir -p $(REPORT_RUNS)
	$(BIN)/toolchain report $(REPORT_RUNS) --out $(REPORT_OUT)

# Sparse-kernel benchmark (CPU rows always, GPU rows when CUDA is visible), serialised with
# other benchmarks on the shared machine; writes benchmarks/results/kernels-<environment>.*
.PHONY: bench-kernels
bench-kernels: $(STAMP)
	flock /tmp/toolchain-bench.lock $(BIN)/python -m benchmarks.sparse_kernels

# Latency measurement (timings serialised with other benchmarks through one lock file when flock exists).
SAMPLES ?=
# `make profile TARGET=jetson RPC_TRACKER=host:port RPC_KEY=jetson-orin` profiles the board's CPU over TVM RPC.
RPC_TRACKER ?=
RPC_KEY ?=
BENCH_LOCK := $(if $(shell command -v flock),flock /tmp/toolchain-bench.lock,)
.PHONY: bench-latency profile

bench-latency: $(STAMP)
	$(BENCH_LOCK) $(BIN)/python benchmarks/latency_predictor.py $(BENCH_ARGS)

profile: $(STAMP)
	$(BENCH_LOCK) $(BIN)/toolchain profile --model $(MODEL) --device $(TARGET) $(if $(SAMPLES),--samples $(SAMPLES)) \
		$(if $(RPC_TRACKER),--rpc-tracker $(RPC_TRACKER) --rpc-key $(RPC_KEY))

# Budget sweep benchmark (cpu/onnxruntime, measured). It takes /tmp/toolchain-bench.lock around every
# measurement itself: do not wrap it in flock. SWEEP_ARGS e.g. "--models demo --seeds 1,2,3 --budgets 0.35,0.5,0.65".
SWEEP_ARGS ?=
.PHONY: sweep
sweep: $(STAMP)
	$(BIN)/python -m benchmarks.budget_sweep $(SWEEP_ARGS)

# Model coverage: torchvision, timm, transformers and Ultralytics models pruned at 0.5 by the toolchain (CLI,
# API where the CLI has no source yet) and by Torch-Pruning alone (auto and hand-written ignore lists); each in
# a subprocess with a 60 s limit and an 8 GB cap. Resumes benchmarks/results/coverage-<environment>.json.
# COVERAGE_ARGS e.g. "--subset" or "'timm:*'".
COVERAGE_ARGS ?=
.PHONY: bench-coverage
bench-coverage: $(STAMP)
	$(BENCH_LOCK) $(BIN)/python -m benchmarks.model_coverage $(COVERAGE_ARGS)
