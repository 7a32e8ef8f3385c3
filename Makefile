# Tusk: the two entry points of the README, plus the benchmark scripts.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lock clean

# A virtual environment with every package at the version constraints.txt locks (torch and torchvision
# unpinned, so each user gets the build for their CUDA; it runs on CPU too), and Tusk itself installed
# editable, which gives the `tusk` command (= python main.py). Refresh the lock: make lock.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	-$(BIN)/python scripts/refresh_lock.py --check 1   # a warning: another Python may need packages the lock lacks
	touch $(STAMP)

setup: $(STAMP)

# The main job, offline, on the embedded synthetic benchmark: zero-shot micro-clip, then CLIP-Adapter with a
# memory, on the images in the four styles micro-clip never saw (where training has the most to learn).
demo: setup
	$(BIN)/python main.py --model zeroshot-clip --dataset seq-synth --synth_domains unseen --seed 0
	$(BIN)/python main.py --model clip-adapter --dataset seq-synth --synth_domains unseen --buffer_size 2000 --seed 0

# The whole test suite, offline, in TEST_WORKERS processes (pytest-xdist; one torch thread each on 2 cores), a
# test file per worker so that a module's shared runs happen once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: setup
	$(BIN)/python scripts/bench_loop_overhead.py

# Rewrite constraints.txt from the packages installed in .venv (after changing requirements*.txt: install the
# new packages into .venv first, e.g. .venv/bin/pip install -r requirements-dev.txt -c constraints.txt NEWPKG).
lock:
	$(BIN)/python scripts/refresh_lock.py

clean:
	rm -rf $(VENV) .pytest_cache
