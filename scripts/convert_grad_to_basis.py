"""Turn raw gradient snapshots into an orthogonal-gradient basis file (the MTIL framework's
``convert_grad_to_basis.py``), for ``--orthogonal_gradients_path``.

The input maps each parameter name (open_clip's, e.g. ``visual.transformer.resblocks.0.attn.in_proj_weight``) to its
snapshots: a list of flattened gradients (the framework's raw ``grad_<Dataset>.pth``, saved on SIGUSR1) or an (n, D)
tensor. Per name, the right singular vectors of the snapshot matrix that hold ``--energy`` of its energy (at most
20, as the framework's ``q``) are kept, orthonormal rows; the output maps each name to its (k, D) rows. The file is
read with ``weights_only=True`` and written atomically. Unlike the framework's script, a name with a single snapshot
keeps that one direction instead of being left out.

Usage: python scripts/convert_grad_to_basis.py --input grad_DTD.pth --output basis_DTD.pth [--energy 0.97]
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.utils.orthogonal_gradients import svd_basis  # noqa: E402
from utils.config import _Parser  # noqa: E402 - argparse that raises UserError (one line, exit 2)
from utils.errors import UserError  # noqa: E402
from utils.options import add_to_parser, canonical_flags, option, resolve  # noqa: E402


@dataclass
class ConvertOptions:
    input: str = option("", "raw snapshots: {name: [flattened gradients]} or {name: (n, D) tensor}")
    output: str = option("", "the basis file to write: {name: (k, D) orthonormal rows}")
    energy: float = option(0.97, "the share of each parameter's snapshot energy the basis keeps", min=0.0, max=1.0)


def snapshots_matrix(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.reshape(1, -1) if value.ndim == 1 else value.reshape(value.shape[0], -1)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        sizes = {v.numel() for v in value}
        if len(sizes) != 1:
            raise UserError(f"--input: the snapshots of {name} differ in size ({sorted(sizes)[:3]})")
        return torch.stack([v.flatten() for v in value])
    raise UserError(f"--input: {name} holds no gradient snapshots (a tensor or a list of tensors expected)")


def convert(raw: Mapping, energy: float) -> dict[str, torch.Tensor]:
    return {name: svd_basis(snapshots_matrix(name, value).float(), energy) for name, value in raw.items()}


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_to_parser(parser, ConvertOptions)
    try:
        args, _ = resolve(ConvertOptions, [("cli", vars(parser.parse_args(canonical_flags(
            sys.argv[1:] if argv is None else argv))))])
        if not args.input or not args.output:
            raise UserError("pass --input FILE and --output FILE")
        from utils.atomic import load_torch, save_torch
        if not os.path.isfile(args.input):
            raise UserError(f"--input: no such file '{args.input}'")
        try:
            raw = load_torch(args.input, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - not a torch file, or pickled objects
            raise UserError(f"--input {args.input}: not a snapshot file torch can read with weights_only=True "
                            f"({type(exc).__name__})") from None
        if not isinstance(raw, Mapping) or not raw:
            raise UserError(f"--input {args.input}: expected a non-empty mapping of parameter names to snapshots")
        basis = convert(raw, args.energy)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_torch(args.output, basis)
    rows = sum(b.shape[0] for b in basis.values())
    print(f"{args.output}: {len(basis)} parameters, {rows} rows, {sum(b.numel() for b in basis.values()):,} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
