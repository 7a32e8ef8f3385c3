"""Tusk's command line: ``python main.py --model M --dataset D [options]`` (``--help`` lists them)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from utils import signals

    argv = sys.argv[1:] if argv is None else argv
    with signals.handled():
        try:
            return _main(argv)
        except signals.Interrupted as stop:      # before a run directory existed, or while reading its files
            print(f"\ninterrupted by {stop} before the run started: nothing to resume; rerun the same command",
                  file=sys.stderr)
            return 128 + stop.signum


def _main(argv: list[str]) -> int:
    from utils.config import parse_config
    from utils.deviations import list_deviations_command, wants_list_deviations
    from utils.errors import UserError
    from utils.experiment import run_experiment
    from utils.options import canonical_flags, check_repeated
    from utils.training import TrainingDiverged

    try:
        check_repeated(canonical_flags(argv))
        if wants_list_deviations(argv):
            print(list_deviations_command(argv))
            return 0
        config, resume_dir = parse_config(argv)
        run_experiment(config, resume_dir)
    except UserError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
