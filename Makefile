# Tusk: the two entry points of the README, plus the benchmark scripts.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

# A virtual environment with everything pinned in requirements*.txt (torch and torchvision
# unpinned, so each user gets the build for their CUDA; it runs on CPU too).
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

# The main job, offline, on the embedded synthetic benchmark: zero-shot micro-clip, then CLIP-Adapter with a
# memory, on the images in the four styles micro-clip never saw (where training has the most to learn).
demo: setup
	$(BIN)/python main.py --model zeroshot-clip --dataset seq-synth --synth_domains unseen --seed 0
	$(BIN)/python main.py --model clip-adapter --dataset seq-synth --synth_domains unseen --buffer_size 2000 --seed 0

# The whole test suite, offline.
test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python scripts/bench_loop_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
