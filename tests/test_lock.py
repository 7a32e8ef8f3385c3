"""The locked install: constraints.txt pins what the requirements pull in; `tusk` is `python main.py`."""
from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import refresh_lock  # noqa: E402


def test_every_requirement_is_pinned_except_torch():
    pins = refresh_lock.read_lock()
    named = set(refresh_lock.top_level())
    assert {"torch", "torchvision"} <= named
    assert not {"torch", "torchvision"} & set(pins)
    missing = sorted(named - {"torch", "torchvision"} - set(pins))
    assert not missing, f"requirements without a pin in constraints.txt: {missing} (make lock)"
    assert all(v and v[0].isdigit() for v in pins.values())


def test_closure_follows_requirements_but_not_into_torch():
    found = refresh_lock.closure(["timm"])
    # timm's own requirements are followed (huggingface-hub, safetensors, pyyaml), torch's are not (sympy is
    # required by torch alone)
    assert {"timm", "huggingface-hub", "safetensors", "pyyaml"} <= set(found)
    assert not {"torch", "torchvision", "sympy"} & set(found)
    assert found["timm"] == importlib.metadata.version("timm")


def test_tusk_console_command_is_main(capsys):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["tusk"]
    module, func = target.split(":")
    entry = getattr(importlib.import_module(module), func)
    import main
    assert entry is main.main
    assert entry(["--model", "nosuch", "--dataset", "seq-synth"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert canonicalize_name(project["project"]["name"]) == "tusk"
