"""From the command line to one resolved, typed configuration, with the source of every value.

Precedence, highest first (documented in the README):
1. an explicit command-line flag (``cli``);
2. the method's YAML (``--model_config default|best``: ``models/config/<model>.yaml``; ``default``
   loads its ``default:`` section, ``best`` adds the ``<dataset>:`` section and, inside it, the
   section named after the buffer size, e.g. ``500:``);
3. the method's defaults (its ``DEFAULTS`` for run options, its ``Options`` field defaults);
4. the dataset's defaults (its ``DEFAULTS``);
5. the option's own default.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from datasets import get_dataset_class, list_datasets
from models import get_model_class, list_models
from utils import options as opt
from utils.errors import UserError
from utils.run_options import RunOptions

CONFIG_DIR = Path(__file__).resolve().parent.parent / "models" / "config"


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UserError`` (one line, exit code 2) instead of printing usage."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


@dataclass
class Config:
    model: str
    dataset: str
    backbone: str
    model_config: str
    run: RunOptions
    method: Any
    data: Any
    net: Any
    sources: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "selection": {"model": self.model, "dataset": self.dataset, "backbone": self.backbone,
                          "model_config": self.model_config},
            "run": opt.to_dict(self.run), "method": opt.to_dict(self.method),
            "dataset": opt.to_dict(self.data), "backbone": opt.to_dict(self.net),
            "sources": self.sources, "argv": self.argv,
        }

    @classmethod
    def from_json(cls, blob: Mapping[str, Any]) -> "Config":
        sel = blob["selection"]
        model_cls = get_model_class(sel["model"])
        dataset_cls = get_dataset_class(sel["dataset"])
        net_cls = model_cls.backbone_options(sel["backbone"])
        return cls(model=sel["model"], dataset=sel["dataset"], backbone=sel["backbone"],
                   model_config=sel["model_config"],
                   run=opt.resolve(RunOptions, [("saved", blob["run"])])[0],
                   method=opt.resolve(model_cls.Options, [("saved", blob["method"])])[0],
                   data=opt.resolve(dataset_cls.Options, [("saved", blob["dataset"])])[0],
                   net=opt.resolve(net_cls, [("saved", blob["backbone"])])[0],
                   sources=dict(blob.get("sources", {})), argv=list(blob.get("argv", [])))


def _selection_parser(add_help: bool) -> _Parser:
    p = _Parser(prog="main.py", add_help=add_help, allow_abbrev=False,
                description="Tusk: continual learning with vision-language models. "
                            "Pass --model and --dataset with --help to see their options too.")
    g = p.add_argument_group("selection")
    g.add_argument("--model", help=f"the method: {', '.join(list_models())}")
    g.add_argument("--dataset", help=f"the benchmark: {', '.join(list_datasets())}")
    g.add_argument("--backbone", help="the network (default: the method's, else the dataset's)")
    g.add_argument("--model_config", default="none", choices=("none", "default", "best"),
                   help="load the method's YAML settings: its 'default' section, or the best known "
                        "settings for this dataset (and buffer size)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last completed task")
    g.add_argument("--list_deviations", nargs="?", const="1", default=argparse.SUPPRESS, metavar="BOOL",
                   help="with --model M: print how M differs from the code it reproduces, and exit "
                        "(handled by main.py before anything else)")
    return p


#: Flags that may be given together with --resume (they do not change results).
RESUME_OVERRIDES = ("quiet", "device", "num_workers", "data_path", "stop_after")


@dataclass
class EvalConfig:
    """A ``--eval_only`` command: the method and backbone that read ``run.load``, and the datasets to evaluate
    (none for ``--eval_single``), each with its own options."""
    model: str
    backbone: str
    datasets: list[str]
    run: RunOptions
    method: Any
    data: dict[str, Any]
    net: Any
    sources: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    def resolved_datasets(self) -> list[tuple[type, list[str] | None, str]]:
        from utils.eval_modes import resolve_eval_dataset
        return [resolve_eval_dataset(name) for name in self.datasets]

    def to_json(self) -> dict[str, Any]:
        return {"selection": {"model": self.model, "backbone": self.backbone, "eval_datasets": self.datasets},
                "run": opt.to_dict(self.run), "method": opt.to_dict(self.method),
                "datasets": {name: opt.to_dict(o) for name, o in self.data.items()},
                "backbone": opt.to_dict(self.net), "sources": self.sources, "argv": self.argv}


def parse_config(argv: Sequence[str]) -> tuple[Config | EvalConfig, str | None]:
    """Resolve ``argv`` into a ``Config`` (an ``EvalConfig`` with ``--eval_only 1``); returns ``(config,
    resume_dir)``. Flags may be spelled with hyphens and with the aliases of ``utils.options.FLAG_ALIASES``."""
    original = list(argv)
    argv = opt.canonical_flags(original)
    wants_help = any(a in ("-h", "--help") for a in argv)
    first, _ = _selection_parser(add_help=False).parse_known_args(argv)
    if first.resume:
        return _resume_config(first.resume, argv), first.resume
    if _eval_only(argv):
        return _eval_config(first, argv, original), None
    given = next((n for n in _EVAL_FLAGS if n != "eval_datasets"
                  for a in argv if a == f"--{n}" or a.startswith(f"--{n}=")), None)
    if given:
        raise UserError(f"--{given} is an evaluation-only flag: add --eval_only 1 --load FILE "
                        f"(during training, --eval_interval N evaluates the current task)")
    if not first.model or not first.dataset:
        if wants_help:
            _full_parser(None, None, None).print_help()
            raise SystemExit(0)
        raise UserError("--model and --dataset are required (see --help); "
                        f"models: {', '.join(list_models())}; datasets: {', '.join(list_datasets())}")
    model_cls = get_model_class(first.model)
    dataset_cls = get_dataset_class(first.dataset)
    yaml_sections, yaml_source = _model_yaml_sections(model_cls, dataset_cls, first.model_config)
    yaml_backbone = next((s["backbone"] for s in reversed(yaml_sections) if "backbone" in s), None)
    backbone = first.backbone or yaml_backbone or model_cls.DEFAULTS.get("backbone") \
        or dataset_cls.DEFAULTS.get("backbone")
    if not backbone:
        raise UserError(f"--backbone is required: neither {model_cls.NAME} nor {dataset_cls.NAME} "
                        f"has a default")
    net_cls = model_cls.backbone_options(backbone)

    parser = _full_parser(model_cls, dataset_cls, net_cls)
    cli = vars(_parse_all(parser, argv, f"model '{model_cls.NAME}' on '{dataset_cls.NAME}'"))
    selection = {k: cli.pop(k) for k in ("model", "dataset", "backbone", "model_config", "resume") if k in cli}
    model_config = selection.get("model_config", "none")

    yaml_layer = _merge_model_yaml(yaml_sections, yaml_source, cli)
    yaml_layer.pop("backbone", None)                     # chosen above, before the backbone's options exist
    known = set(opt.field_names(RunOptions)) | set(opt.field_names(model_cls.Options)) \
        | set(opt.field_names(dataset_cls.Options)) | set(opt.field_names(net_cls))
    opt.check_known(yaml_layer, known, yaml_source)
    for name, where in ((model_cls.DEFAULTS, f"{model_cls.NAME}.DEFAULTS"),
                        (dataset_cls.DEFAULTS, f"{dataset_cls.NAME}.DEFAULTS")):
        opt.check_known([k for k in name if k != "backbone"], known, where)

    layers = [("cli", cli), (yaml_source, yaml_layer), ("method defaults", model_cls.DEFAULTS),
              ("dataset defaults", dataset_cls.DEFAULTS)]
    sources: dict[str, str] = {}
    resolved = []
    for cls in (RunOptions, model_cls.Options, dataset_cls.Options, net_cls):
        obj, src = opt.resolve(cls, layers)
        resolved.append(obj)
        sources.update(src)
    sources["backbone"] = "cli" if first.backbone else yaml_source if yaml_backbone else (
        "method defaults" if model_cls.DEFAULTS.get("backbone") else "dataset defaults")
    config = Config(model=model_cls.NAME, dataset=dataset_cls.NAME, backbone=backbone, model_config=model_config,
                    run=resolved[0], method=resolved[1], data=resolved[2], net=resolved[3],
                    sources=sources, argv=original)
    from utils.eval_datasets import check_eval_datasets
    check_eval_datasets(model_cls, config.run.eval_datasets)     # extra columns after each task, never trained
    return config, None


_EVAL_FLAGS = ("eval_datasets", "eval_single", "class_names")


def _eval_only(argv: list[str]) -> bool:
    """Whether ``argv`` asks for ``--eval_only`` (the first thing to know: it decides what else is required)."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    parser.add_argument("--eval_only", nargs="?", const="1", default="0")
    known, _ = parser.parse_known_args(argv)
    return opt.coerce(opt.field_of(RunOptions, "eval_only"), known.eval_only, "--eval_only")


def _eval_config(first: argparse.Namespace, argv: list[str], original: list[str]) -> EvalConfig:
    """``--eval_only``: ``--model`` is optional (zero-shot CLIP scores the loaded weights), ``--dataset`` is one
    dataset to evaluate (or give several with ``--eval_datasets``), and ``--eval_single`` needs no dataset."""
    from utils.eval_modes import DEFAULT_EVAL_MODEL, resolve_eval_dataset
    if first.model_config != "none":
        raise UserError("--model_config does not apply to --eval_only (nothing is trained)")
    model_cls = get_model_class(first.model or DEFAULT_EVAL_MODEL)
    pre = _Parser(add_help=False, allow_abbrev=False)
    for name in _EVAL_FLAGS:
        pre.add_argument(f"--{name}", nargs="+" if name == "eval_datasets" else None)
    known, _ = pre.parse_known_args(argv)
    names = opt.coerce(opt.field_of(RunOptions, "eval_datasets"), known.eval_datasets or [])
    if (known.eval_single is None) != (known.class_names is None):
        raise UserError("--eval_single IMAGE and --class_names FILE go together (the classes to rank the image among)")
    if any(a in ("-h", "--help") for a in argv) and not names and not first.dataset:
        _full_parser(model_cls, None, None).print_help()
        raise SystemExit(0)
    if known.eval_single is not None:
        if names or first.dataset:
            raise UserError("--eval_single classifies one image among --class_names: drop --dataset/--eval_datasets")
    elif not names:
        if not first.dataset:
            raise UserError("--eval_only needs the datasets to evaluate: --eval_datasets A,B (or --dataset D), "
                            "or --eval_single IMAGE --class_names FILE")
        names = [first.dataset]
    elif first.dataset:
        raise UserError("--eval_only takes its datasets from --eval_datasets; drop --dataset")
    resolved = [resolve_eval_dataset(n) for n in names]
    dataset_defaults = next((cls.DEFAULTS.get("backbone") for cls, _, _ in resolved), None)
    backbone = first.backbone or model_cls.DEFAULTS.get("backbone") or dataset_defaults
    if not backbone:
        raise UserError(f"--backbone is required: {model_cls.NAME} has no default")
    net_cls = model_cls.backbone_options(backbone)

    parser = _full_parser(model_cls, None, net_cls)
    taken = set(opt.field_names(RunOptions)) | set(opt.field_names(model_cls.Options)) | set(opt.field_names(net_cls))
    taken |= {"model", "dataset", "backbone", "model_config", "resume"}
    for cls in dict.fromkeys(cls for cls, _, _ in resolved):
        opt.add_to_parser(parser.add_argument_group(f"options of dataset '{cls.NAME}'"), cls.Options,
                          defaults=cls.DEFAULTS, taken=taken, shared=True)
    cli = vars(_parse_all(parser, argv, f"--eval_only with model '{model_cls.NAME}'"))
    for key in ("model", "dataset", "backbone", "model_config", "resume"):
        cli.pop(key, None)
    layers = [("cli", cli), ("method defaults", model_cls.DEFAULTS)]
    sources: dict[str, str] = {}
    run, src = opt.resolve(RunOptions, layers)
    sources.update(src)
    method, src = opt.resolve(model_cls.Options, layers)
    sources.update(src)
    net, src = opt.resolve(net_cls, layers)
    sources.update(src)
    data = {n: opt.resolve(cls.Options, [("cli", cli), ("dataset defaults", cls.DEFAULTS)])[0]
            for n, (cls, _, _) in zip(names, resolved)}
    config = EvalConfig(model=model_cls.NAME, backbone=backbone, datasets=list(names), run=run, method=method,
                        data=data, net=net, sources=sources, argv=original)
    _check_eval_flags(config, model_cls)
    return config


def _check_eval_flags(config: EvalConfig, model_cls) -> None:
    run = config.run
    if run.load is not None and not Path(run.load).is_file():
        raise UserError(f"--load: no such model file '{run.load}'")
    for name in ("save_models", "eval_interval"):
        if getattr(run, name):
            raise UserError(f"--{name} does not apply to --eval_only (nothing is trained)")
    if run.eval_single is not None:
        from models.utils.clip_model import ClipModel
        if not issubclass(model_cls, ClipModel):
            raise UserError(f"--eval_single needs a CLIP method (it prompts the class names); '{model_cls.NAME}' "
                            f"is not one (leave --model out for zero-shot CLIP)")
        if not Path(run.eval_single).is_file():
            raise UserError(f"--eval_single: no such image file '{run.eval_single}'")


def _parse_all(parser: _Parser, argv: list[str], what: str) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with an unknown flag named with its closest valid flag, or with the methods
    and datasets it belongs to (``--alpha`` with ``--model sgd``)."""
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = [s[2:] for s in parser._option_string_actions if s.startswith("--")]
        raise opt.unknown_flags_error(unknown, valid, _flag_owners(), what)
    return known


def _flag_owners() -> dict[str, list[str]]:
    """Every method's and dataset's own flag -> the methods and datasets that declare it."""
    owners: dict[str, list[str]] = {}
    for kind, names, get in (("model", list_models, get_model_class), ("dataset", list_datasets, get_dataset_class)):
        for name in names():
            try:
                cls = get(name)
            except UserError:       # a component that failed to import has no flags to offer
                continue
            for flag in opt.field_names(cls.Options):
                owners.setdefault(flag, []).append(f"{kind} '{cls.NAME}'")
    return owners


def _full_parser(model_cls, dataset_cls, net_cls) -> _Parser:
    parser = _selection_parser(add_help=True)
    taken: set[str] = {"model", "dataset", "backbone", "model_config", "resume"}
    groups = [("run options", RunOptions)]
    if model_cls is not None:
        groups.append((f"options of model '{model_cls.NAME}'", model_cls.Options))
    if dataset_cls is not None:
        groups.append((f"options of dataset '{dataset_cls.NAME}'", dataset_cls.Options))
    if net_cls is not None:
        groups.append(("options of the backbone", net_cls))
    defaults: dict[str, Any] = {}
    sources: dict[str, str] = {}          # --help says which defaults a dataset or method overrides
    for owner in (dataset_cls, model_cls):
        if owner is not None:
            defaults.update(owner.DEFAULTS)
            sources.update({k: f"{owner.NAME}'s DEFAULTS" for k in owner.DEFAULTS})
    for title, cls in groups:
        opt.add_to_parser(parser.add_argument_group(title), cls, defaults=defaults, taken=taken,
                          default_sources=sources)
    return parser


def _model_yaml_sections(model_cls, dataset_cls, model_config: str) -> tuple[list[dict[str, Any]], str]:
    """The sections of the method's YAML that apply, lowest precedence first (``default``, then the
    dataset's for ``best``), and the source name recorded for their settings."""
    if model_config == "none":
        return [], "model_config"
    path = _find_yaml(model_cls.NAME)
    if path is None:
        raise UserError(f"--model_config {model_config}: model '{model_cls.NAME}' has no config file "
                        f"(expected {CONFIG_DIR}/{model_cls.NAME}.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    sections = [dict(data.get("default") or {})]
    if model_config != "best":
        return sections, f"{path.name}:default"
    section = data.get(dataset_cls.NAME)
    if section is None:
        raise UserError(f"--model_config best: {path.name} has no settings for dataset "
                        f"'{dataset_cls.NAME}' (it has: {', '.join(k for k in data if k != 'default')})")
    return sections + [dict(section)], f"{path.name}:{dataset_cls.NAME}"


def _merge_model_yaml(sections: list[dict[str, Any]], source: str, cli: Mapping[str, Any]) -> dict[str, Any]:
    """One settings layer from the sections; integer keys of the dataset's section are per-buffer-size
    settings, chosen by ``--buffer_size``."""
    layer: dict[str, Any] = dict(sections[0]) if sections else {}
    for section in sections[1:]:
        plain = {k: v for k, v in section.items() if not isinstance(k, int)}
        layer.update(plain)
        by_buffer = {k: v for k, v in section.items() if isinstance(k, int)}
        if by_buffer:
            size = int(cli.get("buffer_size", layer.get("buffer_size", 0)))
            if size not in by_buffer:
                file, dataset = source.split(":")
                raise UserError(f"--model_config best: {file} has settings for buffer sizes "
                                f"{sorted(by_buffer)} on {dataset}; pass --buffer_size with one of them")
            layer.update(by_buffer[size])
    return layer


def _find_yaml(name: str) -> Path | None:
    key = name.replace("_", "-").lower()
    for p in sorted(CONFIG_DIR.glob("*.yaml")):
        if p.stem.replace("_", "-").lower() == key:
            return p
    return None


def _resume_config(run_dir: str, argv: list[str]) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"--resume: no run at '{run_dir}' (expected {path})")
    try:
        blob = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = "it is empty" if path.is_file() and path.stat().st_size == 0 else f"{type(exc).__name__}: {exc}"
        raise UserError(f"--resume: {path} is not a readable run configuration ({why})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("selection"), dict):
        raise UserError(f"--resume: {path} is not a Tusk run configuration (no 'selection' section)")
    if "eval_datasets" in blob.get("selection", {}):
        raise UserError(f"--resume: {run_dir} is an --eval_only evaluation, which trains nothing; run it again instead")
    try:
        config = Config.from_json(blob)
    except UserError as exc:
        raise UserError(f"--resume: {path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UserError(f"--resume: {path} is not a complete Tusk run configuration "
                        f"({type(exc).__name__}: {exc})") from None
    parser = _Parser(prog="main.py --resume", add_help=False, allow_abbrev=False)
    parser.add_argument("--resume")
    fields = {f: opt.field_of(RunOptions, f) for f in RESUME_OVERRIDES}
    for name, f in fields.items():
        bare = {"nargs": "?", "const": "1"} if f.type is bool else {}     # --quiet alone = --quiet 1
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, **bare)
    extra, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UserError(f"--resume continues a run with its saved settings; only "
                        f"{', '.join('--' + f for f in RESUME_OVERRIDES)} may be changed (got {' '.join(unknown)})")
    for name in fields:      # given to an earlier --resume: saved now, not given to this one
        if config.sources.get(name) == "cli (resume)":
            config.sources[name] = "saved (an earlier --resume)"
    for name, value in vars(extra).items():
        if name in fields:
            setattr(config.run, name, opt.coerce(fields[name], value))
            config.sources[name] = "cli (resume)"
    return config
