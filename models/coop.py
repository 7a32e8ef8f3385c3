"""CoOp (Zhou et al., 2022): learnable context tokens in front of each class name.

Prompts are ``[SOS] v_1 ... v_M <class name>. [EOS]`` through CLIP's frozen text encoder; only the
context vectors train (shared by all classes, or one set per class with ``--class_specific 1``),
initialised from a phrase (``--ctx_init``, default "a photo of a") or N(0, 0.02). Cross-entropy over
every class seen so far, with optional ER replay; the learned context also scores class names of
tasks not seen yet, so ``--eval_future`` works. The prompt itself lives in
``models/utils/prompt_learners.py`` (CLAP reuses it with ``clap4clip --prompt coop``).

The reference is CoOp's ``trainers/coop.py`` with ``configs/trainers/CoOp/vit_b16.yaml`` (SGD lr 0.002, momentum
0.9 and weight decay 5e-4 from Dassl's defaults, cosine per epoch, 1 warm-up epoch at a constant 1e-5, batch 32;
``scripts/coop/main.sh``: 16 random context tokens, or 4 from "a photo of a" with the ``*_ctxv1`` configs), used
in CL as CLAP4CLIP describes (one context trained task after task, CE over the seen classes). ``--model_config
best`` on seq-cifar100 is that recipe with 16 random tokens and CLAP4CLIP's 5 epochs per task.

Deviations from the reference:
- Defaults (4 tokens from "a photo of a", lr 0.01, momentum 0.9, cosine, no warm-up, 5 epochs) were chosen on
  seq-synth; CoOp's recipe is the ``best`` config (``--warmup_epochs 1 --warmup_lr 1e-5`` for its warm-up).
- CoOp trains 200 epochs on 16 shots per class (few-shot); in CL the epochs per task are CLAP4CLIP's 5.
- CLAP4CLIP's own CoOp baseline was released as bytecode only, so whether its tables' CoOp used a memory is not
  known: the ``best`` config has none (add ``--buffer_size``).
- No random-resized-crop: cached features see the test transform (``--feature_views`` caches the dataset's
  augmentation).
"""
from dataclasses import dataclass

from models.utils.memory_replay import REPLAY_MODES, MemoryReplay
from models.utils.prompt_learners import CoopPrompts
from models.utils.prompted_clip import PromptedClip
from utils.options import option


@dataclass
class CoopOptions:
    n_ctx: int = option(4, "learnable context tokens (with --ctx_init, the phrase's length is used)", min=1)
    ctx_init: str = option("a photo of a", "phrase whose token embeddings initialise the context ('' = random)")
    class_specific: bool = option(False, "one context per class (CoOp's CSC) instead of one shared context")
    warmup_epochs: int = option(0, "epochs at the constant --warmup_lr before the schedule starts (CoOp: 1)", min=0)
    warmup_lr: float = option(1e-5, "learning rate of the warm-up epochs (CoOp's WARMUP_CONS_LR)", min=0.0)
    replay: str = option("batch", "how a memory joins training: 'batch' = a memory batch after every stream batch, "
                         "'append' = its items appended to the task's data (CLAP4CLIP's ER; needs --buffer_mode "
                         "balanced)", choices=REPLAY_MODES)


class Coop(MemoryReplay, PromptedClip):
    NAME = "coop"
    Options = CoopOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 0.01, "optim_mom": 0.9, "lr_scheduler": "cosine"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_replay()

    def make_prompt(self):
        o = self.opts
        return CoopPrompts(self.clip, self.dataset.class_names, o.n_ctx, o.ctx_init, o.class_specific,
                           seed=self.args.seed)
