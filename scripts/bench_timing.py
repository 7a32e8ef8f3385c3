"""Shared by the benchmark scripts: time one whole experiment, as ``main.py`` would run it, in this process."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.config import parse_config  # noqa: E402
from utils.experiment import run_experiment  # noqa: E402


def timed_run(argv: list[str]) -> tuple[float, Path]:
    """Wall-clock seconds of ``main.py ARGV`` (config parsing excluded), and the run's directory."""
    config, _ = parse_config(argv)
    start = time.perf_counter()
    run_dir = run_experiment(config)
    return time.perf_counter() - start, run_dir
