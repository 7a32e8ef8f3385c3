"""``micro-clip``: a tiny CLIP pretrained on the synthetic world's pretraining concepts only.

It is open_clip's own :class:`open_clip.model.CLIP` with a small config (:data:`MICRO_CLIP_CONFIG`)
and open_clip's own BPE tokenizer (the full 49,408-token vocabulary, so any prompt text works),
trained contrastively by ``scripts/build_micro_clip.py`` on the 300 pretraining concepts of
:class:`datasets.utils.synthetic_world.SyntheticWorld`, which are disjoint from ``seq-synth``'s
100 classes, in its four pretraining domains only (never the neon, mosaic, clutter and faded styles
that ``seq-synth`` and ``synth-mtil`` also contain): zero-shot accuracy on ``seq-synth`` is transfer to
unseen colour x texture x shape combinations and to unseen styles (``backbone/weights/README.md`` lists
what it never saw). The weights ship with the repository (:data:`WEIGHTS_PATH`, fp16, checked against
:data:`WEIGHTS_SHA256`), so nothing is downloaded::

    model = create_micro_clip()                    # float32, eval mode, on CPU
    tokenizer = micro_clip_tokenizer()
    weights = zero_shot_classifier(model, tokenizer, class_names, TEMPLATES)   # (C, D)
    logits = encode_images(model, images_uint8) @ weights.T * 100

Nothing happens at import: no config is registered with open_clip and no file is read or written.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from utils.checksum import file_sha256  # noqa: F401 - re-exported for the build script and tests
from utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "micro_clip.pt"
# sha256 of the shipped file; scripts/build_micro_clip.py prints it for a new build.
WEIGHTS_SHA256 = "250766e8116af902f931be646ce9d8b19674252c49da06fadcfc0a3ca5b2a8d3"
BUILD_COMMAND = "python scripts/build_micro_clip.py --seed 0 --out backbone/weights/micro_clip.pt"

IMAGE_SIZE = 32
CONTEXT_LENGTH = 16
# open_clip's JSON model-config format (as in open_clip/model_configs/*.json).
MICRO_CLIP_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {
        "image_size": IMAGE_SIZE,
        "layers": 4,
        "width": 128,
        "head_width": 32,
        "patch_size": 8,
        "pool_type": "avg",
    },
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,
        "width": 128,
        "heads": 4,
        "layers": 3,
    },
}

# CLIP's normalisation; images are already 32x32, so preprocessing is just [0, 1] + normalise.
MICRO_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
MICRO_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZERO_SHOT_LOGIT_SCALE = 100.0


def micro_clip_config() -> dict:
    """A deep copy of :data:`MICRO_CLIP_CONFIG` (safe to modify)."""
    return copy.deepcopy(MICRO_CLIP_CONFIG)


def build_micro_clip_model(config: dict | None = None):
    """A randomly initialised open_clip ``CLIP`` from ``config`` (default :data:`MICRO_CLIP_CONFIG`)."""
    from open_clip.model import CLIP

    cfg = micro_clip_config() if config is None else copy.deepcopy(config)
    return CLIP(**cfg)


def config_path_for(weights: str | Path) -> Path:
    """The architecture file that travels with a checkpoint built from another config: ``x.pt`` -> ``x.json``."""
    return Path(weights).with_suffix(".json")


def config_for(weights: str | Path | None) -> dict | None:
    """The config written beside ``weights`` (:func:`config_path_for`), or None: the default size."""
    if weights is None or not config_path_for(weights).is_file():
        return None
    return load_micro_clip_config(config_path_for(weights))


def load_micro_clip_config(path: str | Path) -> dict:
    """An open_clip-format config (JSON) for a micro-clip variant, checked against what the world needs.

    Any width, depth or embedding size works; the image size and the text context must stay micro-clip's
    (the world renders 32 x 32 images and the tokenizer pads to :data:`CONTEXT_LENGTH`).
    """
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"micro-clip config {path} could not be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from exc
    if not (isinstance(cfg, dict) and isinstance(cfg.get("vision_cfg"), dict) and isinstance(cfg.get("text_cfg"), dict)
            and isinstance(cfg.get("embed_dim"), int)):
        raise UserError(f"micro-clip config {path}: expected open_clip's format, a JSON object with embed_dim, "
                        f"vision_cfg and text_cfg (as backbone/micro_clip.py's MICRO_CLIP_CONFIG)")
    fixed = (("vision_cfg", "image_size", IMAGE_SIZE), ("text_cfg", "context_length", CONTEXT_LENGTH))
    for section, key, value in fixed:
        if cfg[section].get(key, value) != value:
            raise UserError(f"micro-clip config {path}: {section}.{key} must be {value} (the synthetic world's), "
                            f"got {cfg[section][key]!r}")
    return cfg


def micro_clip_tokenizer(context_length: int = CONTEXT_LENGTH) -> Callable[[str | Sequence[str]], Tensor]:
    """open_clip's BPE tokenizer (texts -> LongTensor ``(N, context_length)``), truncating long texts."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def create_micro_clip(weights: str | Path | None = WEIGHTS_PATH):
    """The micro-clip model in float32 and eval mode on CPU; ``weights=None`` leaves it random.

    A checkpoint with a config file beside it (:func:`config_path_for`, written by ``build_micro_clip.py
    --config``) is built from that config, any other from :data:`MICRO_CLIP_CONFIG`. A missing or
    unreadable weights file raises :class:`UserError` naming the file and the command that rebuilds it.
    """
    model = build_micro_clip_model(config_for(weights))
    if weights is not None:
        path = Path(weights)
        rebuild = f"rebuild it with `{BUILD_COMMAND}`" if path.resolve() == WEIGHTS_PATH else \
            f"build one with `python scripts/build_micro_clip.py --seed 0 --out {path}`"
        if not path.is_file():
            raise UserError(f"micro-clip weights not found: {path}; {rebuild}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v.float() for k, v in state.items()}
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # a truncated/corrupt file, or one for another config
            raise UserError(f"micro-clip weights {path} could not be loaded "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {rebuild}") from exc
    return model.float().eval()


def preprocess(images: Tensor) -> Tensor:
    """uint8 (or [0, 255] float) images ``(N, 3, 32, 32)`` -> CLIP-normalised float32."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(MICRO_CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(MICRO_CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_images(model, images: Tensor, batch_size: int = 1000) -> Tensor:
    """L2-normalised image embeddings ``(N, D)`` of uint8 images (preprocessed here)."""
    device = next(model.parameters()).device
    out = [model.encode_image(preprocess(images[i:i + batch_size].to(device)), normalize=True)
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.text_projection.shape[1])


@torch.no_grad()
def zero_shot_classifier(model, tokenizer, class_names: Sequence[str], templates: Sequence[str]) -> Tensor:
    """``(C, D)``: per class, the mean of the L2-normalised template embeddings, re-normalised."""
    device = next(model.parameters()).device
    texts = [t.format(name) for name in class_names for t in templates]
    emb = model.encode_text(tokenizer(texts).to(device), normalize=True)
    emb = emb.view(len(class_names), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images: Tensor, labels: Tensor, class_names: Sequence[str],
                       templates: Sequence[str]) -> float:
    """Top-1 zero-shot accuracy (fraction) of uint8 ``images`` against ``class_names``."""
    weights = zero_shot_classifier(model, tokenizer, class_names, templates)
    logits = ZERO_SHOT_LOGIT_SCALE * encode_images(model, images) @ weights.T
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()
