"""CoOp (Zhou et al., 2022): learnable context tokens in front of each class name.

Prompts are ``[SOS] v_1 ... v_M <class name>. [EOS]`` through CLIP's frozen text encoder; only the
context vectors train (shared by all classes, or one set per class with ``--class_specific 1``),
initialised from a phrase (``--ctx_init``, default "a photo of a") or N(0, 0.02). Cross-entropy over
every class seen so far, with optional ER replay; the learned context also scores class names of
tasks not seen yet, so ``--eval_future`` works. The prompt itself lives in
``models/utils/prompt_learners.py`` (CLAP reuses it with ``clap4clip --prompt coop``).
"""
from dataclasses import dataclass

from models.utils.prompt_learners import CoopPrompts
from models.utils.prompted_clip import PromptedClip
from utils.options import option


@dataclass
class CoopOptions:
    n_ctx: int = option(4, "learnable context tokens (with --ctx_init, the phrase's length is used)", min=1)
    ctx_init: str = option("a photo of a", "phrase whose token embeddings initialise the context ('' = random)")
    class_specific: bool = option(False, "one context per class (CoOp's CSC) instead of one shared context")


class Coop(PromptedClip):
    NAME = "coop"
    Options = CoopOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 5, "lr": 0.01, "optim_mom": 0.9, "lr_scheduler": "cosine"}

    def make_prompt(self):
        o = self.opts
        return CoopPrompts(self.clip, self.dataset.class_names, o.n_ctx, o.ctx_init, o.class_specific,
                           seed=self.args.seed)
