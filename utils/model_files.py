"""Model files, as the MTIL framework exchanges them: plain ``{name: tensor}`` state_dicts.

- :func:`read_state_dict` reads a model file without running code from it: a state_dict saved by ``torch.save``
  (loaded with ``weights_only=True``; also wrapped as ``{"state_dict": ...}``, and with DataParallel's ``module.``
  prefix), a ``.safetensors`` file, or a TorchScript archive such as OpenAI's CLIP ``.pt`` files. ``torch.load``
  refuses TorchScript with ``weights_only=True``, and open_clip's ``load_openai_model`` opens them with
  ``torch.jit.load``, which compiles the archive's code; here the archive's ``data.pkl`` is unpickled by a
  restricted unpickler that only builds tensors and plain containers (any class of the archive becomes an inert
  attribute holder) and the state_dict is what ``torch.jit.load(f).state_dict()`` would be: the parameters and
  buffers each class declares (``__parameters__``/``__buffers__`` in the archive's code, read as text).
- :func:`load_checked` loads such a state into a module after checking names and shapes: a file that does not fit
  is a one-line ``UserError`` naming the file and the first mismatching keys.
- :func:`export_name` is the name of a task's exported model in the run directory.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from utils.atomic import load_torch
from utils.errors import UserError

#: How many mismatching keys an error names.
SHOWN_KEYS = 3
#: Extra entries of OpenAI's CLIP state_dicts that are not weights (open_clip drops them too).
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def export_name(task: int, task_name: str | None = None) -> str:
    """``model_task01.pt``, or ``model_task01_dtd.pt`` for a sequence of named datasets."""
    suffix = f"_{re.sub(r'[^A-Za-z0-9.-]+', '-', task_name)}" if task_name else ""
    return f"model_task{task + 1:02d}{suffix}.pt"


def exported_state(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state_dict on the CPU, detached (what ``--save_models`` writes)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ---- reading ---------------------------------------------------------------------------------------
def read_state_dict(path: str | Path, flag: str = "--load") -> dict[str, Tensor]:
    """The ``{name: tensor}`` state in ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}: no such model file '{path}'")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise UserError(f"{flag} {path}: not a readable safetensors file ({_first_line(exc)})") from None
    if is_torchscript(path):
        state: Any = _torchscript_state(path, flag)
    else:
        try:
            state = load_torch(path)
        except pickle.UnpicklingError as exc:
            raise UserError(f"{flag} {path}: holds pickled Python objects, which are not loaded (weights_only=True); "
                            f"save the model's state_dict() instead ({_first_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - not a torch file at all
            raise UserError(f"{flag} {path}: not a model file torch can read ({_first_line(exc)})") from None
    return _unwrap(state, path, flag)


def _unwrap(state: Any, path: Path, flag: str) -> dict[str, Tensor]:
    if isinstance(state, Mapping) and {"format", "completed_tasks", "model"} <= set(state):
        raise UserError(f"{flag} {path}: this is a run's checkpoint (for --resume), not a model file; a run writes "
                        f"model files with --save_models 1")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]            # open_clip training checkpoints, the MTIL framework's {iteration, ...}
    if not isinstance(state, Mapping) or not state:
        raise UserError(f"{flag} {path}: not a state_dict (expected a non-empty mapping of names to tensors)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise UserError(f"{flag} {path}: not a state_dict ({', '.join(map(str, bad[:SHOWN_KEYS]))} "
                        f"{'is' if len(bad) == 1 else 'are'} not tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


# ---- TorchScript archives, without torch.jit.load ---------------------------------------------------
def is_torchscript(path: Path | str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl``), as OpenAI's CLIP ``.pt`` files."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in zf.namelist())


class _ScriptObject:
    """Stands in for a class of a TorchScript archive: keeps its attributes, runs nothing."""
    qualname = ""

    def __setstate__(self, state: Any) -> None:
        self.attributes = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
             "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
             "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
             "BoolStorage": torch.bool}


def _rebuild_tensor(storage: Tensor, offset: int, size, stride, *_rest) -> Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


class _ArchiveUnpickler(pickle.Unpickler):
    """Builds tensors, containers and inert :class:`_ScriptObject` s; refuses every other global."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, flag: str, path: Path):
        super().__init__(file)
        self.zf, self.prefix, self.flag, self.path = zf, prefix, flag, path
        self.storages: dict[str, Tensor] = {}
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch.jit._pickle":      # typed-list / type-tag helpers: the value itself
            return lambda value, *_: value
        raise UserError(f"{self.flag} {self.path}: the TorchScript archive needs {module}.{name} to be read, "
                        f"which is not loaded (only tensors and plain containers are)")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise UserError(f"{self.flag} {self.path}: unexpected record {kind!r} in the TorchScript archive")
        if key not in self.storages:
            raw = bytearray(self.zf.read(f"{self.prefix}/data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else \
                torch.empty(0, dtype=storage_type.dtype)
        return self.storages[key]


_DECLARED = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = \[(.*?)\]\n  __buffers__ = \[(.*?)\]", re.M)


def _declared(zf: zipfile.ZipFile, prefix: str, qualname: str, cache: dict) -> set[str] | None:
    """The parameter and buffer names the archive's code declares for class ``qualname`` (None if not found)."""
    module, _, name = qualname.rpartition(".")
    file = f"{prefix}/code/{module.replace('.', '/')}.py"
    if file not in cache:
        try:
            text = zf.read(file).decode("utf-8")
        except KeyError:
            text = ""
        cache[file] = {m.group(1): set(re.findall(r'"([^"]+)"', m.group(2) + m.group(3)))
                       for m in _DECLARED.finditer(text)}
    return cache[file].get(name)


def _torchscript_state(path: Path, flag: str) -> dict[str, Tensor]:
    with zipfile.ZipFile(path) as zf:
        data = next((n for n in zf.namelist() if n.split("/", 1)[-1] == "data.pkl"), None)
        if data is None:
            raise UserError(f"{flag} {path}: a TorchScript archive without data.pkl")
        prefix = data.rsplit("/", 1)[0]
        with zf.open(data) as fh:
            try:
                root = _ArchiveUnpickler(fh, zf, prefix, flag, path).load()
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged archive
                raise UserError(f"{flag} {path}: unreadable TorchScript archive ({_first_line(exc)})") from None
        if not isinstance(root, _ScriptObject):
            raise UserError(f"{flag} {path}: the TorchScript archive holds no module")
        state: dict[str, Tensor] = {}
        cache: dict = {}

        def walk(obj: _ScriptObject, prefix_: str) -> None:
            names = _declared(zf, prefix, obj.qualname, cache)
            for key, value in getattr(obj, "attributes", {}).items():
                if isinstance(value, _ScriptObject):
                    walk(value, f"{prefix_}{key}.")
                elif isinstance(value, Tensor) and (names is None or key in names):
                    state[prefix_ + key] = value
        walk(root, "")
    return state


# ---- loading -------------------------------------------------------------------------------------
def load_checked(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str,
                 flag: str = "--load") -> None:
    """Load ``state`` into ``module`` (values cast to the module's dtypes) after checking that names and shapes
    match exactly; non-persistent buffers in the file (a traced model's attention mask) are ignored."""
    target = module.state_dict()
    non_persistent = {n for n, _ in module.named_buffers()} - set(target)
    state = {k: v for k, v in state.items() if k not in non_persistent}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k} {list(state[k].shape)} vs {list(target[k].shape)}" for k in target
              if k in state and state[k].shape != target[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{label}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    if problems:
        raise UserError(f"{flag} {path} does not fit {what}: {'; '.join(problems)}")
    module.load_state_dict({k: state[k].to(target[k].dtype) for k in target}, strict=True)
