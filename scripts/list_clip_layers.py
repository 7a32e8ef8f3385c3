"""List a CLIP backbone's layers: every module (name, type, parameters), only its linear layers, or every parameter
with its shape, to choose names for layer-wise options (the MTIL framework's ``list_clip_layers.py``).

The architecture is built without weights (nothing is downloaded). Note that attention blocks
(``nn.MultiheadAttention``) keep their query/key/value projection as one parameter, ``in_proj_weight``, outside
any ``nn.Linear``; ``--params 1`` shows it.

Usage: python scripts/list_clip_layers.py [--backbone micro-clip|ViT-B/16|...] [--linear_only 1] [--params 1]
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import _Parser  # noqa: E402 - argparse that raises UserError (one line, exit 2)
from utils.errors import UserError  # noqa: E402
from utils.options import add_to_parser, canonical_flags, option, resolve  # noqa: E402


@dataclass
class ListOptions:
    backbone: str = option("micro-clip", "the CLIP backbone, as --backbone takes it (micro-clip, ViT-B/16, RN50, ...)")
    linear_only: bool = option(False, "only the nn.Linear layers")
    params: bool = option(False, "every parameter with its shape instead of the modules (with --linear_only 1: "
                                 "the parameters of the linear layers)")


def rows(model: nn.Module, linear_only: bool, params: bool) -> list[tuple[str, str, str]]:
    """(name, type, shape or parameter count) for each listed layer or parameter of ``model``."""
    out = []
    for name, module in model.named_modules():
        if not name or (linear_only and not isinstance(module, nn.Linear)):
            continue
        if params:
            out.extend((f"{name}.{p_name}", "Parameter", "x".join(map(str, p.shape)) or "scalar")
                       for p_name, p in module.named_parameters(recurse=False))
        elif isinstance(module, nn.Linear):
            out.append((name, type(module).__name__, f"{module.out_features}x{module.in_features}"
                        f"{' +bias' if module.bias is not None else ''}"))
        else:
            out.append((name, type(module).__name__, f"{sum(p.numel() for p in module.parameters()):,} params"))
    if params and not linear_only:          # the model's own parameters (CLIP's positional embedding, ...)
        out[:0] = [(n, "Parameter", "x".join(map(str, p.shape)) or "scalar")
                   for n, p in model.named_parameters(recurse=False)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_to_parser(parser, ListOptions)
    try:
        args, _ = resolve(ListOptions, [("cli", vars(parser.parse_args(canonical_flags(
            sys.argv[1:] if argv is None else argv))))])
        from backbone.clip import create_clip
        model = create_clip(args.backbone, weights=False).model
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    listed = rows(model, args.linear_only, args.params)
    width = max((len(r[0]) for r in listed), default=4)
    type_width = max((len(r[1]) for r in listed), default=4)
    for name, kind, size in listed:
        print(f"{name:<{width}}  {kind:<{type_width}}  {size}")
    total = sum(p.numel() for p in model.parameters())
    print(f"{len(listed)} {'parameters' if args.params else 'layers'} listed; {args.backbone}: {total:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
