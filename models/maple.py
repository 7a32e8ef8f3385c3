"""MaPLe (Khattak et al., CVPR 2023): multi-modal prompts in both CLIP encoders, as a CL baseline.

Learned language context (``--n_ctx`` 2 tokens from ``--ctx_init`` "a photo of a") and deep prompts in
layers 2..``--prompt_depth`` (9) of the text encoder, each coupled by a Linear into the vision encoder
(``models/utils/maple_prompts.py``; CLAP reuses it). CLIP stays frozen; gradients run through both
encoders into the prompts, so the input is CLIP-preprocessed images and no feature cache is used.
Used in CL as CLAP4CLIP does: one prompt set trained sequentially with cross-entropy over every class
seen so far, with optional ER replay; the prompts also score classes of future tasks (``--eval_future``).

Defaults: the original trains few-shot ViT-B/16 with SGD lr 0.0035, 5 epochs, batch 4, depth 9, 2 context
tokens; CLAP4CLIP keeps that design for CL. Here: SGD lr 0.0035 (momentum 0.9, cosine), 1 epoch per task,
batch 32, chosen on seq-synth with micro-clip by a small grid (``models/config/maple.yaml`` has the numbers;
depth 9 runs as 3, micro-clip's text depth). The deep prompts and their couplings train, as in MaPLe
(CLAP4CLIP's ``maple_variational`` froze them by a name filter; ``clap4clip --prompt maple`` reproduces that).

The reference is MaPLe's ``trainers/maple.py`` with ``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``;
CLAP4CLIP's plain MaPLe baseline was released as bytecode only.

Deviations from the reference:
- Batch 32 and 1 epoch per task where MaPLe trains few-shot with batch 4 for 5 epochs; no warm-up by default
  (MaPLe: 1 epoch at a constant 1e-5: ``--warmup_epochs 1``).
- The prompt depth is clamped to the shallower encoder (micro-clip's text encoder has 3 layers).
- No random-resized-crop or flip (images go through CLIP's test preprocessing).
"""
from dataclasses import dataclass

from models.utils.maple_prompts import MaplePrompts
from models.utils.prompted_clip import PromptedClip
from utils.options import option


@dataclass
class MapleOptions:
    n_ctx: int = option(2, "learnable context tokens; the first n_ctx tokens of --ctx_init initialise them", min=1)
    ctx_init: str = option("a photo of a", "prompt phrase whose first tokens initialise the context ('' = random)")
    prompt_depth: int = option(9, "layers with prompts in both encoders (clamped to the shallower encoder)", min=1)
    warmup_epochs: int = option(0, "epochs at the constant --warmup_lr before the schedule starts (MaPLe: 1)", min=0)
    warmup_lr: float = option(1e-5, "learning rate of the warm-up epochs (MaPLe's WARMUP_CONS_LR)", min=0.0)


class Maple(PromptedClip):
    NAME = "maple"
    Options = MapleOptions
    FROZEN_IMAGE_ENCODER = False
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 1, "lr": 0.0035, "optim_mom": 0.9, "lr_scheduler": "cosine"}

    def make_prompt(self):
        o = self.opts
        return MaplePrompts(self.clip, self.dataset.class_names, o.n_ctx, o.ctx_init, o.prompt_depth,
                            seed=self.args.seed)

    def image_features(self, x):
        """The prompted image features (what exemplar selectors should see)."""
        return self.prompt.image_features(x)
