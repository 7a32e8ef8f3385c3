"""The MTIL framework's evaluation modes and model files, on top of the task loop.

- ``--eval_only 1 --load FILE --eval_datasets A,B`` (:func:`run_eval_only`): no training; each dataset's test set,
  every task of it, scored by the model built from FILE. Per dataset the accuracy that its setting reports: over a
  task's own classes on task-IL sequences of datasets (``mtil``, ``synth-mtil`` and each of their datasets), over
  all of the benchmark's classes on class-IL ones (``seq-synth``). A run directory like a training run's.
- ``--eval_only 1 --load FILE --eval_single IMAGE --class_names FILE`` (:func:`run_eval_single`): the top-5 classes
  of one image with their probabilities.
- ``--eval_interval N`` (:class:`IntervalMetrics`): ``metrics_<task>.csv`` rows ``iteration,top1,top5`` while a
  task trains; ``--save_models 1`` (:func:`export_task_model`): the model after each task.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from utils import distributed
from utils.atomic import save_torch, write_json, write_text
from utils.checksum import file_sha256
from utils.errors import UserError, unknown_name_error
from utils.eval_datasets import score_dataset
from utils.evaluate import TOP_K, evaluate_step
from utils.model_files import export_name, exported_state
from utils.precision import autocast
from utils.results import RunRecorder, environment, new_run_dir
from utils.seeding import rng_state, seed_everything, set_rng_state

#: The prompt of ``--eval_single``'s class names (the MTIL framework's, with CLIP's period).
SINGLE_TEMPLATE = "a photo of a {}."
#: The default method of the evaluation modes: zero-shot CLIP with the loaded weights.
DEFAULT_EVAL_MODEL = "zeroshot-clip"
RESULTS_FOLDER = "eval-only"
CSV_NAME = "eval_results.csv"


# ---- names -----------------------------------------------------------------------------------------
def resolve_eval_dataset(name: str) -> tuple[type, list[str] | None, str]:
    """``(dataset class, tasks or None, name to report)`` for an ``--eval_datasets`` entry: a benchmark's name
    (``synth-mtil``, ``seq-synth``, ``mtil``), or one dataset of a sequence (``DTD``, ``shapes``)."""
    from datasets import get_dataset_class, list_datasets
    from utils.registry import normalise
    benchmarks = list_datasets()
    if normalise(name) in benchmarks:
        cls = get_dataset_class(name)
        return cls, None, cls.NAME
    members = []
    bare = normalise(name).replace("-", "")
    for benchmark in benchmarks:
        cls = get_dataset_class(benchmark)
        # the MTIL framework's spellings of the distribution-shift sets: ImageNetA, ImageNetSketch, YTBB, ...
        if bare in {normalise(a).replace("-", "") for a in (cls.NAME, *getattr(cls, "ALIASES", ()))}:
            return cls, None, cls.NAME
        for display, task in getattr(cls, "MEMBERS", {}).items():
            if normalise(name) in (normalise(display), normalise(task)):
                return cls, [task], display
            members.append(display)
    raise unknown_name_error("evaluation dataset", name, benchmarks + members)


def task_label(dataset, task: int) -> str:
    """A task's name in file names and tables: its dataset's in sequences of datasets, else ``task<NN>``."""
    names = getattr(dataset, "task_names", None)
    return str(names[task]) if names else f"task{task + 1:02d}"


# ---- during training -----------------------------------------------------------------------------
def export_task_model(model, run_dir: Path, task: int) -> Path:
    """``--save_models``: the model after ``task`` as a plain state_dict, written atomically."""
    names = getattr(model.dataset, "task_names", None)
    path = Path(run_dir) / export_name(task, str(names[task]) if names else None)
    save_torch(path, exported_state(model.exported_module()))
    return path


def task_accuracy(evaluation, dataset, task: int) -> tuple[float, float | None]:
    """(top-1, top-5) of ``task`` as its dataset reports it: task-IL on task-IL sequences, else class-IL."""
    which = "task_il" if dataset.SETTING == "task-il" else "class_il"
    return getattr(evaluation, which)[task], evaluation.top5[which].get(task)


class IntervalMetrics:
    """``--eval_interval N``: evaluate the current task's test set at iterations 0, N, 2N, ... of each task and
    append ``iteration,top1,top5`` (percent; top5 empty below 5 classes) to ``metrics_<task>.csv``. It scores the
    live training model (as the framework), leaves every RNG as it found it, and a task that is trained again
    (after a resume) starts its file again."""

    def __init__(self, loop, interval: int):
        self.loop, self.interval = loop, interval
        self.path: Path | None = None

    def begin_task(self, task: int) -> None:
        self.path = self.loop.recorder.dir / f"metrics_{task_label(self.loop.dataset, task)}.csv"
        if not distributed.is_main():          # DDP: every rank evaluates (sharded), rank 0 writes
            return
        with open(self.path, "w") as fh:
            fh.write("iteration,top1,top5\n")

    def after_step(self, task: int, iteration: int) -> None:
        if iteration % self.interval:
            return
        loop, args = self.loop, self.loop.args
        state = rng_state()
        generator = loop.model.generator.get_state()
        with autocast(loop.model.precision, loop.model.device):
            evaluation = evaluate_step(loop.model, loop.dataset, {task: loop.test_data(task)}, task, [task],
                                       args.eval_batch_size, max_batches=3 if args.debug_mode else None)
        set_rng_state(state)
        loop.model.generator.set_state(generator)
        top1, top5 = task_accuracy(evaluation, loop.dataset, task)
        if not distributed.is_main():
            return
        with open(self.path, "a") as fh:
            fh.write(f"{iteration},{top1:.4f},{'' if top5 is None else f'{top5:.4f}'}\n")
            fh.flush()
            os.fsync(fh.fileno())


# ---- --eval_only on datasets -----------------------------------------------------------------------
def run_eval_only(config) -> Path:
    """Evaluate ``config.run.load`` on every dataset of ``config.datasets``; returns the run directory."""
    from models import get_model_class
    from utils.experiment import resolve_device
    run, model_cls = config.run, get_model_class(config.model)
    device = resolve_device(run.device)
    run_dir = new_run_dir(run.results_path, RESULTS_FOLDER, config.model)
    write_json(run_dir / "config.json", config.to_json())
    log = RunRecorder(run_dir, 0, {}).log               # log.jsonl, as a training run's
    log("start", argv=config.argv, mode="eval_only")
    results: dict[str, Any] = {"mode": "eval_only", "model": config.model, "backbone": config.backbone,
                               "load": None if run.load is None else str(run.load),
                               "load_sha256": None if run.load is None else file_sha256(run.load), "seed": run.seed,
                               "environment": environment(), "status": "running", "datasets": {},
                               "layout": "top1/top5 in percent on each dataset's test set: over a task's own classes "
                                         "on task-IL sequences (the dataset's value: the mean over its tasks), over "
                                         "all the benchmark's classes on class-IL ones (the dataset's value: over all "
                                         "its test images)"}
    rows: list[tuple[str, float, float | None]] = []
    for name, (dataset_cls, tasks, label) in zip(config.datasets, config.resolved_datasets()):
        seed_everything(run.seed)
        dataset = dataset_cls(run, config.data[name], tasks=tasks) if tasks else dataset_cls(run, config.data[name])
        if dataset.SETTING not in model_cls.COMPATIBILITY:
            raise UserError(f"model '{model_cls.NAME}' does not support the {dataset.SETTING} setting of '{label}'")
        backbone = model_cls.create_backbone(config.backbone, dataset, config.net, load=run.load).to(device)
        view = model_cls.input_view(dataset, backbone, run, device, config.method)
        model = model_cls(backbone, view, run, config.method, device)
        n = dataset.N_TASKS
        test = {k: view.task_data(k, "test").to(device) for k in range(n)}
        with autocast(model.precision, device):
            if hasattr(dataset, "eval_metrics"):    # the sets with their own metrics and logit projections
                model.eval()
                entry = score_dataset(lambda x: model(x.to(device)), view, test, run.eval_batch_size, label,
                                      max_batches=3 if run.debug_mode else None)
            else:
                evaluation = evaluate_step(model, view, test, n - 1, list(range(n)), run.eval_batch_size,
                                           quiet=run.quiet, max_batches=3 if run.debug_mode else None)
                entry = _dataset_entry(dataset, evaluation, label)
        results["datasets"][label] = entry
        rows.append((label, entry["top1"], entry["top5"]))
        if n > 1:
            rows.extend((f"{label}/{t}", v["top1"], v["top5"]) for t, v in entry["tasks"].items())
        write_json(run_dir / "results.json", results)
        log("dataset", name=label, top1=entry["top1"], top5=entry["top5"],
            **{k: v for k, v in entry.items() if k not in ("setting", "n_classes", "top1", "top5", "tasks")})
    results["status"] = "evaluated"
    write_json(run_dir / "results.json", results)
    _write_csv(run_dir / CSV_NAME, rows)
    log("end", status=results["status"])
    print(f"{'dataset':<24} {'top1':>7} {'top5':>7}  other metrics")      # also with --quiet: the run's result
    for label, top1, top5 in rows:
        entry = results["datasets"].get(label, {})
        other = "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()
                          if k not in ("setting", "n_classes", "top1", "top5", "tasks"))
        print(f"{label:<24} {top1:7.2f} {'-' if top5 is None else f'{top5:.2f}':>7}  {other}".rstrip())
    print(f"results: {run_dir / 'results.json'}")
    return run_dir


def _dataset_entry(dataset, evaluation, label: str) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    for k in range(dataset.N_TASKS):
        top1, top5 = task_accuracy(evaluation, dataset, k)
        lo, hi = dataset.get_offsets(k)
        tasks[task_label(dataset, k) if dataset.N_TASKS > 1 else label] = {
            "top1": top1, "top5": top5, "n_test": evaluation.sizes[k], "n_classes": hi - lo}
    values = list(tasks.values())
    if dataset.SETTING == "task-il":          # MTIL's convention: each dataset counts once
        weights = [1.0] * len(values)
    else:                                     # one benchmark's classes: every test image counts once
        weights = [float(v["n_test"]) for v in values]

    def mean(key: str) -> float | None:
        if any(v[key] is None for v in values):
            return None
        return sum(w * v[key] for w, v in zip(weights, values)) / max(sum(weights), 1e-12)
    return {"setting": dataset.SETTING, "n_classes": dataset.n_classes, "top1": mean("top1"), "top5": mean("top5"),
            "tasks": tasks}


def _write_csv(path: Path, rows: list[tuple[str, float, float | None]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "top1", "top5"])
    for label, top1, top5 in rows:
        writer.writerow([label, f"{top1:.4f}", "" if top5 is None else f"{top5:.4f}"])
    write_text(path, out.getvalue())


# ---- --eval_single ----------------------------------------------------------------------------------
def read_class_names(path: str) -> list[str]:
    """One class name per line (blank lines and surrounding spaces ignored); at least one, no duplicates."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--class_names: no such file '{path}'")
    try:
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"--class_names {path}: not a UTF-8 text file (one class name per line)") from None
    if not names:
        raise UserError(f"--class_names {path}: no class names (expected one per line)")
    seen: set[str] = set()
    repeated = next((n for n in names if n in seen or seen.add(n)), None)
    if repeated is not None:
        raise UserError(f"--class_names {path}: '{repeated}' is listed twice")
    return names


def _read_image(path: str):
    from PIL import Image, UnidentifiedImageError
    if not Path(path).is_file():
        raise UserError(f"--eval_single: no such image file '{path}'")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"--eval_single {path}: not an image PIL can read ({type(exc).__name__})") from None


@torch.no_grad()
def single_image_top_k(clip, image_path: str, class_names: list[str], device: torch.device, k: int = TOP_K
                       ) -> list[tuple[str, float]]:
    """The ``k`` most probable of ``class_names`` for one image: softmax over s x cos(image, 'a photo of a
    {name}.'), s the logit scale every CLIP method here uses (``ClipBackbone.scale``)."""
    from torchvision.transforms.functional import to_tensor
    image = _read_image(image_path)
    if clip.pil_preprocess is not None:        # open_clip's own transform for PIL images
        x = clip.pil_preprocess(image).unsqueeze(0).to(device)
    else:
        x = clip.preprocess(to_tensor(image).unsqueeze(0).to(device))
    clip.eval()
    image_f = F.normalize(clip.encode_image(x).float(), dim=-1)
    text_f = F.normalize(clip.encode_text(clip.tokenize([SINGLE_TEMPLATE.format(n) for n in class_names])).float(),
                         dim=-1)
    probs = (clip.scale * image_f @ text_f.T).softmax(-1)[0]
    top = probs.topk(min(k, len(class_names)))
    return [(class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def run_eval_single(config) -> list[tuple[str, float]]:
    """Print the top-5 classes of ``--eval_single`` among ``--class_names``, with their probabilities."""
    from models import get_model_class
    from utils.experiment import resolve_device
    run = config.run
    names = read_class_names(run.class_names)
    device = resolve_device(run.device)
    model_cls = get_model_class(config.model)
    clip = model_cls.create_backbone(config.backbone, None, config.net, load=run.load).to(device)
    top = single_image_top_k(clip, run.eval_single, names, device)
    print(f"top-{len(top)} of {len(names)} classes for {run.eval_single} ({clip.name}, {run.load}):")
    width = max(len(n) for n, _ in top)
    for rank, (name, p) in enumerate(top, 1):
        print(f"{rank}. {name:<{width}}  {100 * p:6.2f} %")
    sys.stdout.flush()
    return top
