"""Build a run from its configuration and carry it out: dataset, network, method, loop, outputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from datasets import get_dataset_class
from models import get_model_class
from utils import distributed
from utils.atomic import OutputError, check_output_dir, remove_stale_temporaries, write_json
from utils.config import Config, EvalConfig
from utils.errors import UserError
from utils.loggers import check_available as check_logger, make_logger
from utils.resources import check_memory
from utils.results import RunRecorder, environment, new_run_dir
from utils.seeding import seed_everything
from utils.training import CHECKPOINT, INTERRUPTED, Interrupted, TaskLoop, TrainingDiverged


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: '{name}' is not a torch device (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def build(config: Config):
    """Dataset, model and device for ``config`` (seeded first, so a rebuild is identical)."""
    seed_everything(config.run.seed)
    device = resolve_device(distributed.setup(config.run.device))
    model_cls = get_model_class(config.model)
    with distributed.local_main_first():     # DDP: one rank per machine downloads and extracts
        dataset = get_dataset_class(config.dataset)(config.run, config.data)
    if dataset.SETTING not in model_cls.COMPATIBILITY:
        raise UserError(f"model '{model_cls.NAME}' does not support the {dataset.SETTING} setting of "
                        f"'{dataset.NAME}' (it supports: {', '.join(model_cls.COMPATIBILITY)})")
    if config.run.eval_future and not model_cls.CAN_PREDICT_FUTURE:
        raise UserError(f"--eval_future: model '{model_cls.NAME}' cannot predict classes it has not "
                        f"seen (only zero-shot-capable methods can)")
    with distributed.local_main_first():
        backbone = model_cls.create_backbone(config.backbone, dataset, config.net, load=config.run.load).to(device)
    view = model_cls.input_view(dataset, backbone, config.run, device, config.method)
    model = model_cls(backbone, view, config.run, config.method, device)
    distributed.sync_batchnorm(model)          # DDP: BatchNorm over the global batch
    return view, model


def run_experiment(config: Config | EvalConfig, resume_dir: str | None = None) -> Path | None:
    """Run (or continue) an experiment; returns its run directory. An ``EvalConfig`` (``--eval_only``) evaluates
    instead (``--eval_single`` prints and returns None)."""
    if isinstance(config, EvalConfig):
        if distributed.env_world_size() > 1:
            raise UserError("--eval_only and --eval_single run as one process: start them with python main.py, "
                            "not torchrun")
        from utils.eval_modes import run_eval_only, run_eval_single
        if config.run.eval_single is not None:
            run_eval_single(config)
            return None
        check_output_dir(config.run.results_path, "--results_path")
        return run_eval_only(config)
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        finished = _completed_status(run_dir)
        if finished is not None:
            print(f"{run_dir} is already completed ({finished}); nothing to resume, its files are unchanged",
                  file=sys.stderr)
            return run_dir
        lock = lock_run_dir(run_dir) if distributed.env_rank() == 0 else None     # DDP: rank 0 holds it
        try:
            return _run(config, run_dir)
        finally:
            if lock is not None:
                lock.close()
    if distributed.env_rank() == 0:
        check_output_dir(config.run.results_path, "--results_path")
    return _run(config, None)


def _run(config: Config, run_dir: Path | None) -> Path:
    """The run of :func:`run_experiment`: a new one (``run_dir`` None) or ``--resume run_dir`` (locked)."""
    resuming = run_dir is not None
    if resuming:
        fresh = not (run_dir / CHECKPOINT).is_file()        # stopped before its first checkpoint: start again
        done = _tasks_recorded(run_dir)
        if fresh and done:
            why = "it was run with --checkpoint 0" if not config.run.checkpoint else "the file is missing"
            raise UserError(f"--resume: {run_dir} has no {CHECKPOINT} although {done} task(s) completed ({why}); "
                            f"start it again instead")
    _check_feature_cache_path(config.run.feature_cache)
    check_logger(config.run.logger)
    dataset, model = build(config)
    if config.run.buffer_size:      # a lower bound (a label per item), before anything is allocated
        check_memory(config.run.buffer_size * 8, "--buffer_size", f"a memory of {config.run.buffer_size} items",
                     model.device)
    if not resuming:
        if not distributed.is_main():           # DDP: rank 0 alone makes and writes the run directory
            return _loop(config, Path(distributed.broadcast_object(None)), dataset, model, False, False)
        run_dir = new_run_dir(config.run.results_path, config.dataset, config.model)
        lock = lock_run_dir(run_dir)
        try:
            write_json(run_dir / "config.json", config.to_json())
            distributed.broadcast_object(str(run_dir))
            return _loop(config, run_dir, dataset, model, False, False)
        finally:
            lock.close()
    return _loop(config, run_dir, dataset, model, True, fresh)


def _loop(config: Config, run_dir: Path, dataset, model, resuming: bool, fresh: bool) -> Path:
    header = {"model": config.model, "dataset": config.dataset, "backbone": config.backbone,
              "seed": config.run.seed, "class_order": [int(c) for c in dataset.class_order],
              "class_names": dataset.class_names, "setting": dataset.SETTING, "precision": model.precision,
              "environment": environment()}
    if getattr(dataset, "task_names", None):      # sequences of named datasets (mtil, synth-mtil)
        header["task_names"] = list(dataset.task_names)
    recorder = RunRecorder(run_dir, dataset.N_TASKS, header)
    recorder.writes = distributed.is_main()       # DDP: the other ranks keep their records in memory only
    recorder.eval_only_tasks = list(getattr(dataset, "eval_only_tasks", []))
    loop = TaskLoop(model, dataset, recorder, checkpoint=config.run.checkpoint, save_models=config.run.save_models)
    loop.logger = make_logger(config.run.logger if distributed.is_main() else "none", run_dir, config.to_json(),
                              config.run.wandb_project, config.run.wandb_mode)   # DDP: rank 0 alone logs
    finished = False
    try:
        if resuming:
            start = 0 if fresh else loop.restore()
            _resume_stop_after(config, run_dir, start, dataset.N_TASKS)
            recorder.log("resume", from_task=start, stop_after=config.run.stop_after)
        else:
            recorder.log("start", argv=config.argv)
        if not config.run.quiet and distributed.is_main():
            tqdm.write(f"run directory: {run_dir}")
        loop.run()
        finished = True
    except Interrupted as stop:
        done = len(recorder.class_il)
        loop.save_checkpoint(run_dir / INTERRUPTED, done, signal=stop.signum)
        recorder.status = "interrupted"
        recorder.write()
        recorder.log("interrupted", signal=str(stop), tasks_completed=done)
        if not distributed.is_main():
            pass
        elif config.run.checkpoint or done == 0:
            how = f"{done} task(s) completed. Continue with" if done else \
                "no task completed yet. This starts it again from the first task"
            print(f"\ninterrupted by {stop}; {how}:\n  python main.py --resume {run_dir}", file=sys.stderr)
        else:
            print(f"\ninterrupted by {stop}; {done} task(s) completed, not resumable (--checkpoint 0): "
                  f"rerun the same command", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except TrainingDiverged as err:
        recorder.status = "diverged"
        recorder.write()
        recorder.log("end", status="diverged", error=str(err), tasks_completed=len(recorder.class_il))
        raise
    except OutputError as err:
        raise OutputError(f"{err} (the run directory is under --results_path; earlier files are intact and "
                          f"--resume {run_dir} continues from the last checkpoint)") from None
    finally:
        if not finished:                            # the run stops here: flush what was logged
            loop.logger.close()
    recorder.stats = model.run_stats()
    completed = len(recorder.class_il) == dataset.N_TASKS
    recorder.status = "completed" if completed else "stopped"
    recorder.write()
    recorder.log("end", status=recorder.status)
    loop.logger.final(recorder.metrics(), len(recorder.class_il))
    loop.logger.close()
    if distributed.is_main():
        remove_stale_temporaries(run_dir)
        print(recorder.summary_table())                 # also with --quiet, which hides progress only
        print(f"results: {run_dir / 'results.json'}")
    distributed.barrier()                           # DDP: no rank ends before rank 0's files are complete
    return run_dir


LOCK = ".lock"


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` for this process's life (released when it exits, however it exits):
    a second process that writes to the same run (``--resume`` twice at once) is refused."""
    import fcntl
    try:
        fh = open(run_dir / LOCK, "a")
    except OSError as exc:
        raise UserError(f"cannot use {run_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UserError(f"{run_dir} is in use by another Tusk process (a run or --resume still going); "
                        f"wait for it to end") from None
    return fh


def _results_blob(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _completed_status(run_dir: Path) -> str | None:
    blob = _results_blob(run_dir)
    if isinstance(blob, dict) and blob.get("status") == "completed":
        return f"{blob.get('tasks_completed')} of {blob.get('n_tasks')} tasks"
    return None


def _tasks_recorded(run_dir: Path) -> int:
    blob = _results_blob(run_dir)
    return int(blob.get("tasks_completed") or 0) if isinstance(blob, dict) else 0


def _resume_stop_after(config: Config, run_dir: Path, start: int, n_tasks: int) -> None:
    """``--resume DIR --stop_after M`` continues to task M (M above the tasks done); without it, a run that reached
    its own ``--stop_after`` continues to the end, and one stopped before it (a signal, a kill) continues to it.
    The value used is recorded in config.json, so that a later ``--resume`` knows it."""
    run = config.run
    if config.sources.get("stop_after") == "cli (resume)":
        if run.stop_after is not None and run.stop_after <= start:
            raise UserError(f"--stop_after {run.stop_after}: {run_dir} has already completed {start} task(s); "
                            f"give a larger number (at most {n_tasks}) or leave it out to continue to the end")
    elif run.stop_after is not None and run.stop_after <= start:
        run.stop_after = None
        config.sources["stop_after"] = "resume (to the end)"
    path = run_dir / "config.json"
    if not distributed.is_main():
        return
    blob = json.loads(path.read_text())
    if blob["run"].get("stop_after") != run.stop_after:
        blob["run"]["stop_after"] = run.stop_after
        blob.setdefault("sources", {})["stop_after"] = config.sources.get("stop_after", "default")
        write_json(path, blob)


def _check_feature_cache_path(value: str) -> None:
    if value in ("auto", "off"):
        return
    if not value.strip():
        raise UserError("--feature_cache: an empty path; give a directory, 'auto' or 'off'")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--feature_cache {value}: is a file, not a directory")
    parent = path
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--feature_cache {value}: {parent} is a file, so no directory can be made below it")
