"""Where CLAP4CLIP's time goes: its own modules, or the image encoder?

Three runs of the same setting (``seq-synth`` and micro-clip unless told otherwise), measured in one
process so the ratios compare like with like:

1. ``clap4clip`` with the frozen-feature cache (filled by a first, untimed pass over the data);
2. ``clap4clip`` without it (``--feature_cache off``): the encoder runs on every batch;
3. ``clip-adapter`` with the cache, same epochs, memory and seed.

Reported: seconds per training epoch (the mean of the run's ``epoch`` log events; finetuning on the
memory and evaluation are outside epochs) cached vs uncached, and whole-run times.

    python scripts/bench_clap.py [--n_epochs 1] [--device cpu] [-- extra main.py flags]

Goal: with the cache, an epoch costs what CLAP's modules cost (cached / uncached well below 1) and
CLAP's run time is a small multiple of CLIP-Adapter's.
"""
from __future__ import annotations

import argparse
import json
import tempfile

from bench_timing import timed_run


def run_and_epoch_time(argv: list[str]) -> tuple[float, float]:
    """(whole-run seconds, mean seconds per training epoch)."""
    total, run_dir = timed_run(argv)
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    epochs = [e["seconds"] for e in events if e["event"] == "epoch"]
    return total, sum(epochs) / max(len(epochs), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_epochs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="seq-synth")
    p.add_argument("--buffer_size", type=int, default=1000)
    p.add_argument("extra", nargs="*", help="more main.py flags, after --")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--dataset", args.dataset, "--seed", "0", "--n_epochs", str(args.n_epochs), "--device",
                  args.device, "--quiet", "1", "--results_path", f"{tmp}/results", "--checkpoint", "0",
                  "--buffer_size", str(args.buffer_size), *args.extra]
        cache = ["--feature_cache", f"{tmp}/cache"]
        timed_run(["--model", "zeroshot-clip", *common, *cache, "--n_epochs", "0", "--buffer_size", "0"])
        # the zero-shot pass filled the test split; the train split is filled on first use below
        timed_run(["--model", "clip-adapter", *common, *cache, "--stop_after", "1"])
        clap_cached, clap_epoch_cached = run_and_epoch_time(["--model", "clap4clip", *common, *cache])
        print(f"clap4clip, cached:    {clap_cached:8.1f}s run, {clap_epoch_cached:7.2f}s per epoch", flush=True)
        clap_off, clap_epoch_off = run_and_epoch_time(["--model", "clap4clip", *common, "--feature_cache", "off"])
        print(f"clap4clip, uncached:  {clap_off:8.1f}s run, {clap_epoch_off:7.2f}s per epoch", flush=True)
        adapter, adapter_epoch = run_and_epoch_time(["--model", "clip-adapter", *common, *cache])
        print(f"clip-adapter, cached: {adapter:8.1f}s run, {adapter_epoch:7.2f}s per epoch", flush=True)
    print(f"per epoch: cached / uncached = {clap_epoch_cached / clap_epoch_off:.2f}; "
          f"CLAP / CLIP-Adapter run time = {clap_cached / adapter:.1f}")


if __name__ == "__main__":
    main()
