"""Typed options: dataclass fields that become command-line flags, YAML keys and config entries.

Every configurable thing (the run itself, a method, a dataset, a backbone) declares its options once,
as a dataclass whose fields are made with :func:`option`. From that one declaration Tusk derives
the ``--flag`` with its help text, validates values from the command line and from YAML with the
same rules, and records in the run's ``config.json`` where each value came from.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from utils.errors import UserError, closest

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None,
           min: float | None = None, max: float | None = None, bare: Any = None) -> Any:
    """A dataclass field that is also a command-line option.

    ``choices`` restricts the value to a set; ``min``/``max`` bound numbers (inclusive).
    List defaults are copied per instance. ``bare`` is the value of the flag given without one
    (``--wise_merge`` alone = ``--wise_merge 0.8``); a boolean flag given alone is always true.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "min": min, "max": max, "bare": bare}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class _Kind:
    base: type          # int, float, str or bool
    optional: bool      # None allowed
    is_list: bool


def _kind(tp: Any) -> _Kind:
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported option type {tp}")
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence):
        (inner,) = typing.get_args(tp)[:1]
        return _Kind(inner, optional, True)
    if tp not in (int, float, str, bool):
        raise TypeError(f"unsupported option type {tp}")
    return _Kind(tp, optional, False)


def _fields(cls: type) -> list[dataclasses.Field]:
    if not dataclasses.is_dataclass(cls):
        raise UserError(f"{cls.__module__}.{getattr(cls, '__qualname__', cls)} is not a dataclass: decorate it with "
                        f"@dataclass and make its fields with utils.options.option(...)")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out.append(f)
    return out


def _scalar(kind: _Kind, value: Any, flag: str) -> Any:
    base = kind.base
    if isinstance(value, str):
        text = value.strip()
        if base is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise UserError(f"{flag}: expected 0/1/true/false, got '{value}'")
        if base is str:
            return text
        try:
            number = base(text)
        except ValueError:
            raise UserError(f"{flag}: expected {'an integer' if base is int else 'a number'}, "
                            f"got '{value}'") from None
        return _finite(number, flag)
    if base is bool and isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), flag)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return _finite(value, flag)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base is str and isinstance(value, (str, int, float)):
        return str(value)
    raise UserError(f"{flag}: expected {base.__name__}, got {value!r}")


_INT64 = 2 ** 63 - 1


def _finite(number: Any, flag: str) -> Any:
    """NaN and infinity pass every min/max comparison (or fail it confusingly) and are not JSON: refused; so are
    integers that no tensor, seed or counter can hold (beyond 64 bits)."""
    if isinstance(number, float) and not math.isfinite(number):
        raise UserError(f"{flag}: expected a finite number, got {number}")
    if isinstance(number, int) and not isinstance(number, bool) and abs(number) > _INT64:
        raise UserError(f"{flag}: {number} is too large (at most {_INT64})")
    return number


def coerce(f: dataclasses.Field, value: Any, flag: str | None = None) -> Any:
    """Convert ``value`` (a CLI string, a YAML value or a default) to the field's type and check it."""
    flag = flag or f"--{f.name}"
    kind = _kind(f.type)
    if value is None or (kind.optional and isinstance(value, str) and value.strip().lower() == "none"):
        if kind.optional:
            return None
        raise UserError(f"{flag}: a value is required")
    if kind.is_list:
        if isinstance(value, str):
            items = [v for v in value.replace(",", " ").split() if v]
        elif isinstance(value, (list, tuple)):
            items = []
            for v in value:
                items.extend([p for p in v.replace(",", " ").split() if p] if isinstance(v, str) else [v])
        else:
            items = [value]
        result: Any = [_check(f, _scalar(kind, v, flag), flag) for v in items]
        return result
    return _check(f, _scalar(kind, value, flag), flag)


def _check(f: dataclasses.Field, value: Any, flag: str) -> Any:
    meta = f.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = closest(str(value), choices)
        hint = f". Did you mean '{close}'?" if close else ""
        raise UserError(f"{flag}: '{value}' is not one of {', '.join(map(str, choices))}{hint}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise UserError(f"{flag}: {value} is below the minimum {lo} (accepted range: {_range(lo, hi)})")
    if hi is not None and value > hi:
        raise UserError(f"{flag}: {value} is above the maximum {hi} (accepted range: {_range(lo, hi)})")
    return value


def _range(lo: Any, hi: Any) -> str:
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def field_of(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of ``cls`` with its type resolved (for :func:`coerce`)."""
    return next(f for f in _fields(cls) if f.name == name)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def add_to_parser(group: argparse._ActionsContainer, cls: type, defaults: Mapping[str, Any] | None = None,
                  taken: set[str] | None = None, shared: bool = False,
                  default_sources: Mapping[str, str] | None = None) -> None:
    """Add one ``--flag`` per field of ``cls``. Values stay strings (coerced later) and absent flags
    stay absent, so that the resolver can tell an explicit CLI value from a default. ``shared``: a field
    already in ``taken`` is one flag for both classes (several datasets' options in one evaluation)
    instead of an error. ``default_sources`` names where a default of ``defaults`` comes from (the help then says
    ``default: 0.05, from seq-synth's DEFAULTS; otherwise 0.1``)."""
    defaults = defaults or {}
    default_sources = default_sources or {}
    for f in _fields(cls):
        if taken is not None:
            if f.name in taken:
                if shared:
                    continue
                raise UserError(_clash_message(f.name, cls))
            taken.add(f.name)
        kind = _kind(f.type)
        default = defaults.get(f.name, _default(f))
        extra = ""
        if f.metadata.get("choices") is not None:
            extra = f" {{{','.join(map(str, f.metadata['choices']))}}}"
        elif f.metadata.get("min") is not None or f.metadata.get("max") is not None:
            extra = f" range {_range(f.metadata.get('min'), f.metadata.get('max'))}"
        bare = True if kind.base is bool and not kind.is_list else f.metadata.get("bare")
        if bare is not None:
            extra += f"; alone: {bare}"
        where = ""
        if f.name in defaults and f.name in default_sources and defaults[f.name] != _default(f):
            where = f", from {default_sources[f.name]}; otherwise {_default(f)}"
        help_text = f"{f.metadata.get('help', '')}{extra} (default: {default}{where})".replace("%", "%%")
        group.add_argument(f"--{f.name}", dest=f.name, default=argparse.SUPPRESS,
                           nargs="+" if kind.is_list else "?" if bare is not None else None,
                           const=None if bare is None else str(bare), metavar=kind.base.__name__.upper(),
                           help=help_text)


def _clash_message(name: str, cls: type) -> str:
    """Why ``--name`` of ``cls`` cannot be added: it is a run option's, or another component's, flag."""
    from utils.run_options import RunOptions
    where = f"{cls.__module__.replace('.', '/')}.py: {cls.__qualname__}"
    if cls is not RunOptions and name in field_names(RunOptions):
        return (f"{where}: option --{name} clashes with the run option --{name}: rename it, or set the run "
                f"option's default in the class's DEFAULTS")
    return f"{where}: option --{name} is already declared by another component: rename it"


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def resolve(cls: type, layers: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[Any, dict[str, str]]:
    """Build a ``cls`` instance from layered sources, highest priority first.

    ``layers`` is a sequence of ``(source_name, values)``; the first layer that holds a field wins,
    otherwise the field's own default (source ``"default"``). Returns the instance and a
    ``{field: source}`` map. Unknown keys are not checked here (see :func:`check_known`).
    """
    layers = list(layers)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in _fields(cls):
        for source, layer in layers:
            if f.name in layer:
                flag = f"--{f.name}" if source == "cli" else f"{f.name} (from {source})"
                values[f.name] = coerce(f, layer[f.name], flag)
                sources[f.name] = source
                break
        else:
            values[f.name] = None if _default(f) is None else coerce(f, _default(f))
            sources[f.name] = "default"
    return cls(**values), sources


def check_known(keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """Reject keys (e.g. from a YAML file) that no option declares, naming the closest one."""
    known = set(known)
    for key in keys:
        if key not in known:
            close = closest(key, sorted(known))
            hint = f"; did you mean '{close}'?" if close else ""
            raise UserError(f"{where}: unknown option '{key}'{hint}")


def validated(cls: type, options: Any, where: str) -> Any:
    """An instance of ``cls`` from ``None`` (the defaults), a mapping of its fields or an instance,
    checked with the same rules as the command line (a dataclass does not check itself)."""
    if options is None:
        return cls()
    if isinstance(options, Mapping):
        check_known(options.keys(), field_names(cls), where)
        return resolve(cls, [(where, options)])[0]
    if not isinstance(options, cls):
        raise TypeError(f"{where} takes options of type {cls.__name__}, got {type(options).__name__}")
    values = {f.name: coerce(f, getattr(options, f.name)) for f in _fields(cls)}
    return dataclasses.replace(options, **values) if values else options


def to_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclass
class NoOptions:
    """Placeholder for components that declare no options of their own."""


#: The MTIL framework's flag spellings (its README and ``args.py``) that map one to one onto a Tusk option: the
#: one table of aliases, read by :func:`canonical_flags`. Any other ``--a-b`` is ``--a_b`` (hyphens and underscores
#: are the same in every flag name), so entries that only differ by them document the seed's spelling.
FLAG_ALIASES: dict[str, str] = {
    "train-mode": "train_mode",
    "iterations": "n_iters",
    "epochs": "n_epochs",
    "batch-size-eval": "eval_batch_size",
    "data-location": "data_path",
    "ls": "ls",
    "image-loss": "image_loss",
    "text-loss": "text_loss",
    "ref-dataset": "ref_dataset",
    "ref-sentences": "ref_sentences",
    "we": "we",
    "avg_freq": "avg_freq",
    "l2": "l2",
    "wise_merge": "wise_merge",
    "eval-only": "eval_only",
    "eval-single": "eval_single",
    "class-names": "class_names",
    "eval-interval": "eval_interval",
    "eval-datasets": "eval_datasets",
}


def canonical_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with every flag name in Tusk's spelling: aliases of :data:`FLAG_ALIASES` replaced, hyphens in the
    name turned into underscores (``--eval-only`` = ``--eval_only``, ``--iterations=5`` = ``--n_iters=5``).
    Values are left alone, and so is everything after a bare ``--``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            key = name.replace("_", "-")
            target = next((t for a, t in FLAG_ALIASES.items() if a.replace("_", "-") == key), None)
            arg = f"--{target or name.replace('-', '_')}{eq}{value}"
        out.append(arg)
    return out


def check_repeated(argv: Sequence[str]) -> None:
    """Refuse a flag given twice (``--seed 1 --seed 2``: argparse would keep the last one silently). ``argv`` is in
    canonical spelling (:func:`canonical_flags`); everything after a bare ``--`` is left alone."""
    seen: set[str] = set()
    for arg in argv:
        if arg == "--":
            return
        if arg.startswith("--") and len(arg) > 2 and not _is_number(arg):
            name = arg[2:].partition("=")[0]
            if name in seen:
                raise UserError(f"--{name} is given more than once; give it once")
            seen.add(name)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def unknown_flags_error(unknown: Sequence[str], valid: Iterable[str], owners: Mapping[str, Sequence[str]],
                        what: str) -> UserError:
    """One line for the first unknown flag of ``unknown`` (argparse's leftovers): the owners of a flag that belongs
    to another method or dataset (``owners``: flag name -> their names), else the closest valid flag of ``valid``.
    ``what`` says what the valid flags are the flags of (``model 'sgd' on seq-synth``)."""
    flags = [a for a in unknown if a.startswith("-") and not _is_number(a)]
    if not flags:
        return UserError(f"unexpected argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)} "
                         f"(values follow the flag they belong to: --flag VALUE)")
    name = flags[0].lstrip("-").partition("=")[0]
    if name in owners:
        return UserError(f"--{name} is an option of {', '.join(owners[name])}, not of {what}")
    close = closest(name, sorted(set(valid)))
    hint = f"; did you mean --{close}?" if close else " (see --help)"
    return UserError(f"unknown flag {flags[0].partition('=')[0]} for {what}{hint}")
