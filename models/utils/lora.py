"""LoRA for CLIP fine-tuning (``--lora``): through peft, or the MTIL framework's shared LoRA (``--lora_shared``).

Both put a low-rank update ``W + (alpha / r) * B @ A`` (A: r x in, Kaiming-uniform; B: out x r, zeros) on the
weights of the targeted layers of the towers a ``--train_mode`` trains, freeze every other CLIP parameter, and
leave the model's function unchanged at the start (B = 0).

**Targets** (``--lora_target_modules``, as ``python scripts/list_clip_layers.py`` lists the modules) are module
names or dot-separated suffixes of them (``mlp.c_fc`` matches ``visual.transformer.resblocks.0.mlp.c_fc`` and every
other block's): ``nn.Linear`` layers, and ``attn`` for CLIP's ``nn.MultiheadAttention`` blocks, whose query, key,
value and output projections all get LoRA. ``nn.MultiheadAttention`` does not call its projections as modules: it
hands ``in_proj_weight`` and ``out_proj.weight`` to ``F.multi_head_attention_forward`` directly, so a LoRA on
``attn.out_proj`` as an ``nn.Linear`` never reaches the output (the reference's bug).

- **peft** (``--lora_shared 0``): ``nn.Linear`` targets go through ``peft.inject_adapter_in_model`` with
  ``LoraConfig(r, lora_alpha, lora_dropout, bias="none")`` (peft ``lora.Linear``, dropout on the LoRA branch's
  input). ``attn`` targets do not: peft 0.21.2's ``lora.MultiheadAttention`` merges the deltas into the weights for
  each forward pass and adds the output projection's twice (``W_o + 2 dW_o``; huggingface/peft PR 3774), so they
  are parametrized here in peft's layout, one pair on the stacked q/k/v ``in_proj_weight`` (A: r x D, B: 3D x r)
  and one on ``out_proj.weight``, without dropout (peft's merged-weight attention has none either).
- **parametrized** weights (``torch.nn.utils.parametrize``): ``in_proj_weight`` and ``out_proj.weight`` ARE
  ``W + s * B @ A`` wherever ``nn.MultiheadAttention`` reads them, so attention LoRA reaches the output
  (``attn.out_proj`` alone: the output projection only).
- **shared** (``--lora_shared 1``, the framework's ``lora_injection.py`` as its README describes it): every target
  parametrized. One master (A, B) per key, the first layer met for a key creating it and every later one
  holding the same ``nn.Parameter`` objects: a Linear's key is (layer type, in, out), an attention projection's
  (``"attn"``, embed dim, heads), so q, k, v and o of every block of that shape share one master, or with
  ``--lora_shared_split_qkvo 1`` (``"attn"``, q|k|v|o, embed dim, heads), one master per projection type. The
  layer type is ``attn`` or ``mlp`` from the module path, so attention and MLP never share. The key has no tower:
  as in the framework, towers of equal widths share (micro-clip's are both 128 wide with 4 heads). No dropout (the
  framework's shared LoRA has none).

**Effective weights** (:class:`LoraWeights`): what the weight-space options (``--wise_merge``, ``--we``,
``--we_wise``, ``--moving_avg``, ``--l2``) and ``--save_models`` see is the merged model under open_clip's own
names (``...attn.in_proj_weight`` = W + the q/k/v deltas), never the LoRA factors: averaging A and B separately
is not averaging B @ A. Writing such weights back sets the base so that the effective weight is the value given.

**Per task** (:meth:`LoraInjection.fold` and :meth:`LoraInjection.reset`), as the framework runs it (each task a
process that loads the previous task's merged weights and builds fresh adapters): at a task's end the deltas are
folded into the base weights (B = 0), and at the next task's start A is drawn again (seeded by the run's seed and
the task) so every task trains its own rank-r update of the merged model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from utils.errors import UserError, unknown_name_error

#: the framework's targets were ``attn.out_proj,mlp.c_fc,mlp.c_proj``; ``attn`` is what reaches the attention
DEFAULT_TARGETS = ("attn", "mlp.c_fc", "mlp.c_proj")
PROJECTIONS = ("q", "k", "v", "o")


def short_name(name: str) -> str:
    """A module name without its position in the towers: what follows the last numeric component
    (``visual.transformer.resblocks.0.mlp.c_fc`` -> ``mlp.c_fc``), or the whole name when there is none."""
    parts = name.split(".")
    last = max((i for i, p in enumerate(parts) if p.isdigit()), default=-1)
    return ".".join(parts[last + 1:]) or name


def layer_type(name: str) -> str:
    """``attn``, ``mlp`` or ``other``: the first component of the module path that starts with attn or mlp."""
    for part in name.split("."):
        if part.startswith("attn"):
            return "attn"
        if part.startswith("mlp"):
            return "mlp"
    return "other"


def _in_towers(name: str, towers: Iterable[str]) -> bool:
    return ("image" if name.startswith("visual.") else "text") in towers


@dataclass
class Site:
    """One LoRA'd weight: its base tensor (``owner.attr``, read live), its delta, and its open_clip name."""
    owner: nn.Module
    attr: str
    name: str                       # the open_clip name of the weight (``...attn.in_proj_weight``)
    delta: Callable[[], Tensor]     # the current (alpha / r) * B @ A, with its gradient path

    def base(self) -> Tensor:
        return getattr(self.owner, self.attr)


def resolve_targets(model: nn.Module, targets: Iterable[str], towers: Iterable[str]) -> dict[str, set[str]]:
    """``{module name: projections}`` for every targeted module of ``model`` in ``towers``: ``{"w"}`` for a
    Linear, a subset of q/k/v/o for an attention block (``attn.out_proj``: o). Raises ``UserError`` for a name
    that matches no linear or attention layer, listing the valid names."""
    modules = dict(model.named_modules())
    kinds = {n: m for n, m in modules.items() if n and isinstance(m, (nn.Linear, nn.MultiheadAttention))}
    valid = sorted({short_name(n) for n in kinds})
    chosen: dict[str, set[str]] = {}
    for target in targets:
        target = target.strip()
        if not target:
            continue
        hits = [n for n in kinds if n == target or n.endswith("." + target)]
        if not hits:
            raise unknown_name_error("LoRA target module", target, valid)
        for n in hits:
            if not _in_towers(n, towers):
                continue
            parent_name = n.rsplit(".", 1)[0] if "." in n else ""
            if isinstance(modules.get(parent_name), nn.MultiheadAttention) and n.endswith(".out_proj"):
                chosen.setdefault(parent_name, set()).add("o")      # the attention's o only (parametrized)
            elif isinstance(kinds[n], nn.MultiheadAttention):
                if not kinds[n]._qkv_same_embed_dim:
                    raise UserError(f"--lora_target_modules {target}: {n} has separate q/k/v weights, which LoRA "
                                    "does not support here")
                chosen.setdefault(n, set()).update(PROJECTIONS)
            else:
                chosen[n] = {"w"}
    if not chosen:
        raise UserError(f"--lora_target_modules {','.join(targets)}: no targeted layer in the towers this "
                        f"--train_mode trains ({', '.join(sorted(towers)) or 'none'})")
    return chosen


# ---- shared LoRA (parametrizations) ---------------------------------------------------------------------
class LinearDelta(nn.Module):
    """Parametrization ``W -> W + s * B @ A`` (A and B may be shared with other layers)."""

    def __init__(self, lora_A: nn.Parameter, lora_B: nn.Parameter, scaling: float):
        super().__init__()
        self.lora_A, self.lora_B, self.scaling = lora_A, lora_B, scaling

    def delta(self) -> Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.delta().to(weight.dtype)


class QkvDelta(nn.Module):
    """Parametrization of an attention block's stacked ``in_proj_weight`` (3D x D): q, k and v each get their
    own ``s * B @ A`` (zeros for a projection without LoRA)."""

    def __init__(self, pairs: dict[str, tuple[nn.Parameter, nn.Parameter]], dim: int, scaling: float):
        super().__init__()
        self.dim, self.scaling, self.projections = dim, scaling, tuple(p for p in "qkv" if p in pairs)
        for p, (a, b) in pairs.items():
            setattr(self, f"{p}_lora_A", a)
            setattr(self, f"{p}_lora_B", b)

    def delta(self) -> Tensor:
        parts = []
        for p in "qkv":
            if p in self.projections:
                parts.append(self.scaling * (getattr(self, f"{p}_lora_B") @ getattr(self, f"{p}_lora_A")))
            else:
                parts.append(None)
        ref = next(t for t in parts if t is not None)
        return torch.cat([t if t is not None else ref.new_zeros(self.dim, self.dim) for t in parts])

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.delta().to(weight.dtype)


def _new_pair(r: int, fan_in: int, fan_out: int, like: Tensor) -> tuple[nn.Parameter, nn.Parameter]:
    a = nn.Parameter(torch.empty(r, fan_in, device=like.device, dtype=torch.float32))
    b = nn.Parameter(torch.zeros(fan_out, r, device=like.device, dtype=torch.float32))
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    return a, b


class LoraInjection:
    """LoRA put into an open_clip model (see the module docstring): its sites, its parameters, fold and reset."""

    def __init__(self, model: nn.Module, targets: Iterable[str], towers: Iterable[str], r: int, alpha: float,
                 dropout: float, shared: bool, split_qkvo: bool):
        if r < 1:
            raise UserError("--lora_r must be at least 1")
        self.model, self.shared, self.split_qkvo = model, shared, split_qkvo
        self.r, self.scaling = r, alpha / r
        chosen = resolve_targets(model, list(targets), set(towers))
        self.targeted = sorted(chosen)
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            # the initial draw is replaced by reset(): leave the run's RNG alone
            torch.manual_seed(0)
            self._pairs: list[tuple[nn.Parameter, nn.Parameter]] = []     # what reset() draws again
            self.sites = self._inject_parametrized(chosen, shared)
            if not shared:
                self.sites += self._inject_peft(chosen, dropout)
        model.requires_grad_(False)
        #: by name: peft re-registers the attention's base weights as new (frozen) parameters on every forward
        self.lora_parameters = [p for n, p in model.named_parameters() if self.plain_name(n) is None]
        for p in self.lora_parameters:
            p.requires_grad_(True)

    # ---- injection -------------------------------------------------------------------------------------
    def _inject_peft(self, chosen: dict[str, set[str]], dropout: float) -> list[Site]:
        """The nn.Linear targets through peft (attention goes through :meth:`_inject_parametrized`)."""
        linear = [n for n, projections in chosen.items() if projections == {"w"}]
        if not linear:
            return []
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import layer as lora_layer
        regex = "^(" + "|".join(re.escape(n) for n in linear) + ")$"
        config = LoraConfig(r=self.r, lora_alpha=self.r * self.scaling, lora_dropout=dropout,
                            target_modules=regex, bias="none")
        inject_adapter_in_model(config, self.model, adapter_name="default")
        sites = []
        for name, module in self.model.named_modules():
            if isinstance(module, lora_layer.Linear):
                sites.append(Site(module.get_base_layer(), "weight", f"{name.replace('.base_layer', '')}.weight",
                                  lambda m=module: m.get_delta_weight("default")))
                self._pairs.append((module.lora_A["default"].weight, module.lora_B["default"].weight))
        return sites

    def _inject_parametrized(self, chosen: dict[str, set[str]], shared: bool) -> list[Site]:
        """Parametrized weights: every target when ``shared`` (with its masters), else the attention blocks only
        (one pair on the stacked q/k/v ``in_proj_weight``, 3D x D, and one on ``out_proj``, peft's layout)."""
        masters: dict[tuple, tuple[nn.Parameter, nn.Parameter]] = {}
        modules = dict(self.model.named_modules())
        order = {n: i for i, n in enumerate(modules)}
        sites = []

        def pair(key: tuple | None, fan_in: int, fan_out: int, like: Tensor):
            if key is None:
                new = _new_pair(self.r, fan_in, fan_out, like)
                self._pairs.append(new)
                return new
            if key not in masters:
                masters[key] = _new_pair(self.r, fan_in, fan_out, like)
                self._pairs.append(masters[key])
            return masters[key]

        def parametrize_(module: nn.Module, attr: str, delta: nn.Module, name: str) -> None:
            parametrize.register_parametrization(module, attr, delta)
            sites.append(Site(getattr(module.parametrizations, attr), "original", name, delta.delta))

        for name in sorted(chosen, key=order.__getitem__):
            module, projections = modules[name], chosen[name]
            if isinstance(module, nn.MultiheadAttention):
                d, h, w = module.embed_dim, module.num_heads, module.in_proj_weight
                qkv = [p for p in "qkv" if p in projections]
                if qkv and shared:
                    key = (lambda p: ("attn", p, d, h)) if self.split_qkvo else (lambda p: ("attn", d, h))
                    parametrize_(module, "in_proj_weight",
                                 QkvDelta({p: pair(key(p), d, d, w) for p in qkv}, d, self.scaling),
                                 f"{name}.in_proj_weight")
                elif qkv:
                    if len(qkv) < 3:
                        raise UserError("LoRA on some of q/k/v only needs --lora_shared 1")
                    parametrize_(module, "in_proj_weight", LinearDelta(*pair(None, d, 3 * d, w), self.scaling),
                                 f"{name}.in_proj_weight")
                if "o" in projections:
                    key = (("attn", "o", d, h) if self.split_qkvo else ("attn", d, h)) if shared else None
                    parametrize_(module.out_proj, "weight", LinearDelta(*pair(key, d, d, w), self.scaling),
                                 f"{name}.out_proj.weight")
            elif shared:
                key = (layer_type(name), module.in_features, module.out_features)
                parametrize_(module, "weight",
                             LinearDelta(*pair(key, module.in_features, module.out_features, module.weight),
                                         self.scaling), f"{name}.weight")
        self.masters = masters
        return sites

    # ---- what the rest of the model sees ---------------------------------------------------------------
    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.lora_parameters)

    def dropout_modules(self) -> list[nn.Module]:
        return [m for n, m in self.model.named_modules() if n.endswith("lora_dropout.default")]

    @staticmethod
    def plain_name(name: str) -> str | None:
        """The open_clip name of a state entry of the injected model, ``None`` for LoRA's own entries."""
        if re.search(r"(^|\.)(lora_[A-Za-z_]+|[qkvo]_lora_[AB])(\.|$)|\.parametrizations\.[^.]+\.\d+\.", name):
            return None
        name = re.sub(r"\.parametrizations\.([^.]+)\.original$", r".\1", name)
        return name.replace(".base_layer", "")

    def merged_state(self, state: dict[str, Tensor], prefix: str = "", grad: bool = False) -> dict[str, Tensor]:
        """``state`` (the injected model's ``state_dict(keep_vars=True)``, names under ``prefix``) as the merged
        open_clip model's: LoRA entries dropped, names plain, each LoRA'd weight W + delta (detached unless
        ``grad``)."""
        effective = {prefix + s.name: s for s in self.sites}
        out = {}
        for name, t in state.items():
            local = name[len(prefix):] if name.startswith(prefix) else None
            plain = self.plain_name(local) if local is not None else name
            if plain is None:
                continue
            key = prefix + plain if local is not None else name
            if key in effective:
                site = effective[key]
                with torch.set_grad_enabled(grad):
                    value = site.base() + site.delta().to(site.base().dtype)
                out[key] = value if grad else value.detach()
            else:
                out[key] = t
        return out

    @torch.no_grad()
    def assign(self, key: str, prefix: str, value: Tensor) -> bool:
        """If ``key`` is a LoRA'd weight, set its base so that the effective weight is ``value``; else False."""
        for s in self.sites:
            if prefix + s.name == key:
                base = s.base()
                base.copy_(value.to(base.device, base.dtype) - s.delta().to(base.dtype))
                return True
        return False

    @torch.no_grad()
    def fold(self) -> None:
        """Move every delta into its base weight (B = 0): the model's function is unchanged."""
        for s in self.sites:
            base = s.base()
            base.add_(s.delta().to(base.dtype))
        for _, b in self._pairs:
            b.zero_()

    @torch.no_grad()
    def reset(self, seed: int) -> None:
        """Fresh adapters on the current weights: A Kaiming-uniform from ``seed``, B = 0 (after :meth:`fold`)."""
        generator = torch.Generator().manual_seed(seed)
        for a, b in self._pairs:
            bound = 1.0 / math.sqrt(a.shape[1])            # kaiming_uniform_(a=sqrt(5)) on an (r, in) matrix
            a.copy_((torch.rand(a.shape, generator=generator) * 2 - 1) * bound)
            b.zero_()

    def merged_module(self, prefix: str = "") -> nn.Module:
        """A module whose ``state_dict()`` is the merged open_clip model's (what ``--save_models`` writes)."""
        return _MergedExport(self)


class _MergedExport(nn.Module):
    def __init__(self, injection: LoraInjection):
        super().__init__()
        self._injection = [injection]            # not a submodule

    def state_dict(self, *args, **kwargs):
        inj = self._injection[0]
        return {k: v.detach() for k, v in inj.merged_state(inj.model.state_dict(keep_vars=True)).items()}


class LoraWeights:
    """The weight-space view of a LoRA model (``weights_module()``): named as the merged model, read and written
    as effective weights (see the module docstring). ``models.utils.weight_space`` reads it with
    :meth:`weight_state` and writes it with :meth:`load_weight_state`."""

    def __init__(self, module: nn.Module, injection: LoraInjection, prefix: str):
        self.module, self.injection, self.prefix = module, injection, prefix

    def weight_state(self) -> dict[str, Tensor]:
        return self.injection.merged_state(self.module.state_dict(keep_vars=True), self.prefix)

    def trained_weights(self) -> dict[str, Tensor]:
        """The LoRA'd weights W + delta with their gradient path (what ``--l2`` penalises), and any other trained
        parameter (the head of ``image-fc``)."""
        sites = {self.prefix + s.name for s in self.injection.sites}
        merged = self.injection.merged_state(self.module.state_dict(keep_vars=True), self.prefix, grad=True)
        lora = {id(p) for p in self.injection.lora_parameters}
        others = {n: p for n, p in self.module.named_parameters() if p.requires_grad and id(p) not in lora}
        return {**{n: merged[n] for n in sites}, **others}

    @torch.no_grad()
    def load_weight_state(self, values: dict[str, Tensor]) -> None:
        live = self.weight_state()
        values = {n: values[n].detach() for n in live}
        for name, t in live.items():
            if not self.injection.assign(name, self.prefix, values[name]):
                t.copy_(values[name])
