"""Build a run from its configuration and carry it out: dataset, network, method, loop, outputs."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from datasets import get_dataset_class
from models import get_model_class
from utils.atomic import write_json
from utils.config import Config, EvalConfig
from utils.errors import UserError
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
    device = resolve_device(config.run.device)
    model_cls = get_model_class(config.model)
    dataset = get_dataset_class(config.dataset)(config.run, config.data)
    if dataset.SETTING not in model_cls.COMPATIBILITY:
        raise UserError(f"model '{model_cls.NAME}' does not support the {dataset.SETTING} setting of "
                        f"'{dataset.NAME}' (it supports: {', '.join(model_cls.COMPATIBILITY)})")
    if config.run.eval_future and not model_cls.CAN_PREDICT_FUTURE:
        raise UserError(f"--eval_future: model '{model_cls.NAME}' cannot predict classes it has not "
                        f"seen (only zero-shot-capable methods can)")
    backbone = model_cls.create_backbone(config.backbone, dataset, config.net, load=config.run.load).to(device)
    view = model_cls.input_view(dataset, backbone, config.run, device, config.method)
    model = model_cls(backbone, view, config.run, config.method, device)
    return view, model


def run_experiment(config: Config | EvalConfig, resume_dir: str | None = None) -> Path | None:
    """Run (or continue) an experiment; returns its run directory. An ``EvalConfig`` (``--eval_only``) evaluates
    instead (``--eval_single`` prints and returns None)."""
    if isinstance(config, EvalConfig):
        from utils.eval_modes import run_eval_only, run_eval_single
        if config.run.eval_single is not None:
            run_eval_single(config)
            return None
        return run_eval_only(config)
    dataset, model = build(config)
    header = {"model": config.model, "dataset": config.dataset, "backbone": config.backbone,
              "seed": config.run.seed, "class_order": [int(c) for c in dataset.class_order],
              "class_names": dataset.class_names, "setting": dataset.SETTING, "precision": model.precision,
              "environment": environment()}
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / CHECKPOINT).is_file():
            raise UserError(f"--resume: {run_dir} has no {CHECKPOINT} (the run stopped before finishing "
                            f"its first task, or was run with --checkpoint 0); start it again instead")
    else:
        run_dir = new_run_dir(config.run.results_path, config.dataset, config.model)
        write_json(run_dir / "config.json", config.to_json())
    recorder = RunRecorder(run_dir, dataset.N_TASKS, header)
    recorder.eval_only_tasks = list(getattr(dataset, "eval_only_tasks", []))
    loop = TaskLoop(model, dataset, recorder, checkpoint=config.run.checkpoint, save_models=config.run.save_models)
    if resume_dir is not None:
        start = loop.restore()
        recorder.log("resume", from_task=start)
    else:
        recorder.log("start", argv=config.argv)
    if not config.run.quiet:
        tqdm.write(f"run directory: {run_dir}")
    try:
        loop.run()
    except Interrupted as stop:
        loop.save_checkpoint(run_dir / INTERRUPTED, len(recorder.class_il), signal=stop.signum)
        recorder.status = "interrupted"
        recorder.write()
        recorder.log("interrupted", signal=str(stop), tasks_completed=len(recorder.class_il))
        print(f"\ninterrupted by {stop}; {len(recorder.class_il)} task(s) completed. Continue with:\n"
              f"  python main.py --resume {run_dir}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except TrainingDiverged as err:
        recorder.status = "diverged"
        recorder.write()
        recorder.log("end", status="diverged", error=str(err), tasks_completed=len(recorder.class_il))
        raise
    recorder.stats = model.run_stats()
    completed = len(recorder.class_il) == dataset.N_TASKS
    recorder.status = "completed" if completed else "stopped"
    recorder.write()
    recorder.log("end", status=recorder.status)
    print(recorder.summary_table())                 # also with --quiet, which hides progress only
    print(f"results: {run_dir / 'results.json'}")
    return run_dir
