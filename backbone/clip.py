"""The one CLIP provider: open_clip models (or the embedded ``micro-clip``) behind one small interface.

``create_clip(name, options)`` accepts the names of the source systems in both spellings
(``ViT-B/16`` and ``ViT-B-16``; ViT-B/32, ViT-L/14, RN50, RN101, RN50x4, RN50x16), any other
open_clip model name, and ``micro-clip``. ``--pretrained`` is an open_clip tag (``openai`` by default,
downloaded by open_clip on the user's machine) or a local checkpoint file (offline). ``create_clip(name,
options, load=FILE)`` (``--load``) builds the architecture without those weights and loads any model file
``utils.model_files`` reads (an exported state_dict, an open_clip checkpoint, an OpenAI TorchScript ``.pt``).
No CLIP code is vendored: encoders, tokenizers and preprocessing are open_clip's own.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.checksum import file_sha256
from utils.errors import UserError, unknown_name_error
from utils.options import option

MICRO_CLIP = "micro-clip"
#: The backbones of the source systems (CLAP4CLIP, ZSCL/MTIL, CGIL, Continual-CLIP).
SEED_MODELS = ("ViT-B-16", "ViT-B-32", "ViT-L-14", "RN50", "RN101", "RN50x4", "RN50x16")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipOptions:
    pretrained: str = option("openai", "CLIP weights: an open_clip pretrained tag (downloaded by open_clip; "
                             "e.g. openai, laion2b_s34b_b88k) or a local checkpoint file. micro-clip uses "
                             "its shipped weights unless a file is given (another size: "
                             "the config x.json beside x.pt, from scripts/build_micro_clip.py --config)")
    quick_gelu: Optional[bool] = option(None, "force QuickGELU activations (OpenAI-trained weights need them; "
                                        "default: the pretrained tag's own setting, on for openai; on for local "
                                        "checkpoints of OpenAI model names)")
    logit_scale: Optional[float] = option(None, "the temperature s of every CLIP logit s * cos(image, text); default "
                                          "the weights' own logit_scale.exp(), as the released codes read it (100 "
                                          "for OpenAI's weights, 27.1 for micro-clip's); a number fixes it (100: "
                                          "Tusk's behaviour on micro-clip before 2026-12)", min=1e-3, max=1e4)


def canonical_clip_name(name: str) -> str:
    """``ViT-B/16`` -> ``ViT-B-16``; raises ``UserError`` for names open_clip does not know."""
    key = name.strip().replace("/", "-")
    if key.lower().replace("_", "-") == MICRO_CLIP:
        return MICRO_CLIP
    import open_clip
    known = {m.lower(): m for m in open_clip.list_models()}
    if key.lower() in known:
        return known[key.lower()]
    raise unknown_name_error("CLIP backbone", name, [MICRO_CLIP, *SEED_MODELS,
                                                     *(s.replace("-B-", "-B/").replace("-L-", "-L/")
                                                       for s in SEED_MODELS if s.startswith("ViT"))])


def is_clip_name(name: str) -> bool:
    try:
        canonical_clip_name(name)
        return True
    except UserError:
        return False


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith(".") or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


class ClipBackbone(nn.Module):
    """A CLIP model with its tokenizer and preprocessing, frozen unless a method unfreezes parts.

    ``weights_id`` identifies the weights (tag or file hash) so that caches keyed on it miss when
    the weights change. ``encoder_calls`` counts images encoded (the feature cache test reads it).
    """

    def __init__(self, name: str, model: nn.Module, tokenizer: Callable[[list[str]], Tensor], image_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], weights_id: str,
                 pil_preprocess: Callable | None = None):
        super().__init__()
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.image_size, self.weights_id = int(image_size), weights_id
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.pil_preprocess = pil_preprocess
        self.embed_dim = int(model.text_projection.shape[1])
        self.encoder_calls = 0
        #: ``--logit_scale``: a fixed temperature instead of the weights' own (``None``).
        self.fixed_scale: float | None = None
        self.model.requires_grad_(False).eval()

    # ---- preprocessing ---------------------------------------------------------------------------
    def preprocess(self, x: Tensor) -> Tensor:
        """CLIP's own test transform for a batch of [0, 1] images: resize the shorter side to the
        model's size (bicubic, antialiased), centre-crop, normalise with CLIP's mean/std."""
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top:top + s, left:left + s]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def describe_preprocess(self) -> str:
        return (f"resize-shorter-bicubic-antialias({self.image_size})+center-crop({self.image_size})"
                f"+normalize(mean={self.mean.flatten().tolist()},std={self.std.flatten().tolist()})")

    # ---- encoders --------------------------------------------------------------------------------
    def encode_image(self, x: Tensor) -> Tensor:
        """Image features (not normalised) of preprocessed images."""
        self.encoder_calls += x.shape[0]
        return self.model.encode_image(x)

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.tokenizer(texts).to(self.model.positional_embedding.device)

    def token_embeddings(self, tokens: Tensor) -> Tensor:
        return self.model.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings: Tensor, tokens: Tensor, truncate: bool = False) -> Tensor:
        """Text features from token embeddings (e.g. with learned context vectors spliced in); the
        end-of-text position is read from ``tokens`` exactly as open_clip's ``encode_text`` does.
        ``truncate``: run the transformer on the positions up to the last end-of-text token only; under the causal
        mask the end-of-text outputs do not depend on the padding after them, so the features are the same (to
        rounding) at a fraction of the cost (77-token contexts hold ~10-token prompts)."""
        m = self.model
        cast = m.transformer.get_cast_dtype()
        length = int(tokens.argmax(dim=-1).max()) + 1 if truncate else embeddings.shape[1]
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        x = embeddings[:, :length].to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        proj = m.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.encode_text_embeddings(self.token_embeddings(tokens), tokens)

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale.exp()

    @property
    def scale(self) -> float:
        """The temperature methods multiply cosines by: ``--logit_scale`` if given, else the weights' own
        ``logit_scale.exp()`` (never trained by any method, so reading it once per run is exact)."""
        return float(self.fixed_scale) if self.fixed_scale is not None else float(self.logit_scale)

    def train(self, mode: bool = True) -> "ClipBackbone":
        """The pretrained model stays in eval mode (no dropout/BN updates) whatever the method does."""
        super().train(mode)
        self.model.eval()
        return self


def create_clip(name: str, options: ClipOptions | None = None, load: str | None = None,
                weights: bool = True) -> ClipBackbone:
    """Build CLIP ``name`` with ``options.pretrained`` weights (tag or file), or with those of the model file
    ``load`` (``--load``): then the architecture is built without reading ``--pretrained``'s weights (nothing is
    downloaded), with the activation they imply (QuickGELU for ``openai`` and for files of OpenAI model names).
    A TorchScript ``--pretrained`` file (OpenAI's original ``.pt``) is read as ``load`` is.
    ``weights=False``: the architecture only, randomly initialised (``scripts/list_clip_layers.py``)."""
    from utils.model_files import is_torchscript
    options = options or ClipOptions()
    canonical = canonical_clip_name(name)
    if load is None and weights and is_torchscript(options.pretrained):
        load = options.pretrained      # OpenAI's .pt: read without running the archive's code (utils.model_files)
    weights = weights and load is None
    clip = _create_micro_clip(options, weights=weights) if canonical == MICRO_CLIP else \
        _create_open_clip(name, canonical, options, weights=weights)
    if load is not None:
        load_clip_file(clip, load)
    clip.fixed_scale = options.logit_scale
    return clip


def load_clip_file(clip: ClipBackbone, path: str) -> None:
    """Replace ``clip``'s weights by the model file ``path`` (names and shapes checked, see ``utils.model_files``)."""
    from utils.model_files import OPENAI_EXTRAS, load_checked, read_state_dict
    state = read_state_dict(path)
    for key in OPENAI_EXTRAS:
        state.pop(key, None)
    target = clip.model.state_dict()
    for key in ("logit_scale", "logit_bias"):        # a scalar in some checkpoints, a 1-d tensor in others
        if key in state and key in target and state[key].numel() == target[key].numel():
            state[key] = state[key].reshape(target[key].shape)
    load_checked(clip.model, state, path, f"--backbone {clip.name}")
    clip.weights_id = f"file-sha256:{file_sha256(path)}"


def _create_open_clip(name: str, canonical: str, options: ClipOptions, weights: bool) -> ClipBackbone:
    import open_clip
    pretrained = options.pretrained
    is_file = _looks_like_path(pretrained) or os.path.isfile(pretrained)
    if is_file:
        if not os.path.isfile(pretrained) and weights:
            raise UserError(f"--pretrained: no such checkpoint file '{pretrained}' for {name}. Pass an existing "
                            f"local file, or an open_clip tag such as 'openai' to download the weights")
        quick_gelu = options.quick_gelu if options.quick_gelu is not None else canonical in SEED_MODELS
        weights_id = f"file-sha256:{file_sha256(pretrained)}" if weights else "none"   # load_clip_file sets it
    else:
        tags = open_clip.list_pretrained_tags_by_model(canonical)
        if pretrained not in tags:
            raise UserError(f"--pretrained: '{pretrained}' is neither an existing file nor an open_clip tag for "
                            f"{canonical} (tags: {', '.join(tags) or 'none'})")
        quick_gelu = options.quick_gelu if options.quick_gelu is not None else \
            bool(open_clip.get_pretrained_cfg(canonical, pretrained).get("quick_gelu", False))
        weights_id = f"open_clip:{canonical}:{pretrained}" if weights else "none"
    try:
        if not weights:               # open_clip warns that the model is random: that is the point here
            logging.disable(logging.WARNING)
        model, _, val_preprocess = open_clip.create_model_and_transforms(
            canonical, pretrained=pretrained if weights else None, force_quick_gelu=quick_gelu)
    except Exception as exc:  # noqa: BLE001 - downloads and checkpoint parsing fail in many ways
        where = f"the file '{pretrained}'" if is_file else f"open_clip's '{pretrained}' weights (a download)"
        raise UserError(f"could not load {canonical} from {where}: {type(exc).__name__}: {exc}. Offline, download "
                        f"the checkpoint elsewhere and pass --pretrained /path/to/checkpoint") from None
    finally:
        logging.disable(logging.NOTSET)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    return ClipBackbone(canonical, model.float(), open_clip.get_tokenizer(canonical), image_size,
                        tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)), weights_id,
                        pil_preprocess=val_preprocess)


def _create_micro_clip(options: ClipOptions, weights: bool = True) -> ClipBackbone:
    from backbone import micro_clip
    use_file = options.pretrained not in ("openai", "shipped") and (
        _looks_like_path(options.pretrained) or os.path.isfile(options.pretrained))
    path = Path(options.pretrained) if use_file else micro_clip.WEIGHTS_PATH
    if not weights:   # the architecture only: a checkpoint's own size when a config lies beside it
        model = micro_clip.build_micro_clip_model(micro_clip.config_for(path if use_file else None)).float().eval()
        return ClipBackbone(MICRO_CLIP, model, micro_clip.micro_clip_tokenizer(),
                            micro_clip.IMAGE_SIZE, micro_clip.MICRO_CLIP_MEAN, micro_clip.MICRO_CLIP_STD, "none")
    if use_file and not path.is_file():
        raise UserError(f"--pretrained: no such micro-clip checkpoint '{path}'")
    model = micro_clip.create_micro_clip(path)
    weights_id = f"micro-clip-sha256:{micro_clip.WEIGHTS_SHA256 if not use_file else file_sha256(path)}"
    return ClipBackbone(MICRO_CLIP, model, micro_clip.micro_clip_tokenizer(), micro_clip.IMAGE_SIZE,
                        micro_clip.MICRO_CLIP_MEAN, micro_clip.MICRO_CLIP_STD, weights_id)
