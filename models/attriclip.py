"""AttriCLIP (Wang et al., CVPR 2023): prompts picked per image from a shared attribute word bank.

Each image selects ``--attr_top_k`` attributes from a bank of ``--n_attributes`` (key, prompt) pairs by
``f̂(x) · K`` and is classified against ``[SOS] <its attributes' prompts> <class name> . [EOS]``
through CLIP's frozen text encoder; the bank is shared by all tasks and never reset, and the image
encoder stays frozen (the feature cache works). The prompt itself is
:class:`models.utils.attriclip_prompts.AttriclipPrompts`. Loss: cross-entropy over the *current
task's* classes only (as the original), plus ``--matching_weight`` x key matching and
``--ortho_weight`` x attribute orthogonality. With a memory (``--buffer_size``) the cross-entropy
instead covers all seen classes on stream + replay (an extension, not in the original). Evaluation
scores every class, so ``--eval_future`` works.

Defaults and sources: 10 attributes, 12 context tokens each, top 3 (paper, original code and mammoth);
matching/ortho weights 0.7/0.3 (mammoth's, described there as the paper's; the original code used
0.5/0.1); SGD without momentum, lr 1e-3 scaled by ``batch_size / 20``, 10 epochs, batch 32, and a
per-iteration cosine from lr to lr x 1e-3 without warm-up, rebuilt every task (original code and
mammoth). ``--lr_scheduler``/``--scheduler_mode`` are ignored: this schedule is always used.

Cost: evaluation encodes every distinct top-k combination in the test set (up to N!/(N-k)!, 720 by
default) with every class name, so it is far slower than CoOp; a full seq-synth run takes minutes on CPU.

Deviations from the reference:
- The backbone is whatever ``--backbone`` says (the original hard-codes ViT-L/14 in fp16).
- The orthogonality term encodes each attribute as ``[SOS] P_i . [EOS]`` instead of the original's ``P_i``
  followed by literal 'x' filler tokens.
- Matching/orthogonality weights 0.7/0.3 are mammoth's; the original code used 0.5/0.1 (``--matching_weight
  0.5 --ortho_weight 0.1``).
- With a memory the cross-entropy covers all seen classes on stream + replay (an extension).
- Images sharing a top-k combination share one text encoding (exact, only faster); denormal gradients of the
  logits are flushed to zero (speed on CPU only).
- micro-clip's 16-token context cannot hold 3 x 12 context tokens: ``--model_config best`` uses 3 x 2 on
  seq-synth.
"""
from dataclasses import dataclass

import torch

from models.utils.attriclip_prompts import AttriclipPrompts
from models.utils.batch_scaled_lr import BatchScaledWarmupCosine
from models.utils.prompted_clip import PromptedClip, prompt_logits
from utils.options import option


@dataclass
class AttriclipOptions:
    n_attributes: int = option(10, "attributes in the shared word bank (keys and prompts)", min=1)
    attr_n_ctx: int = option(12, "context tokens per attribute prompt", min=1)
    attr_top_k: int = option(3, "attributes each image selects; its prompt holds attr_top_k x attr_n_ctx tokens",
                             min=1)
    matching_weight: float = option(0.7, "weight of the key-matching loss (the original code used 0.5)", min=0.0)
    ortho_weight: float = option(0.3, "weight of the attribute-orthogonality loss (the original code used 0.1)",
                                 min=0.0)


class Attriclip(BatchScaledWarmupCosine, PromptedClip):
    NAME = "attriclip"
    Options = AttriclipOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 10, "lr": 1e-3, "batch_size": 32, "optimizer": "sgd",
                "optim_mom": 0.0, "scheduler_mode": "iter"}

    def make_prompt(self):
        o = self.opts
        return AttriclipPrompts(self.clip, self.dataset.class_names, o.n_attributes, o.attr_n_ctx, o.attr_top_k,
                                o.matching_weight, o.ortho_weight, seed=self.args.seed)

    def train_loss(self, inputs, labels):
        """Without a memory, cross-entropy over the current task's classes only (the original)."""
        if self.buffer is None:
            first = self.n_past_classes
            labels = labels - first
        else:
            first = 0
            inputs, labels = self.with_replay(inputs, labels)
        out = self.prompt(inputs, self.n_seen_classes, first)
        logits = prompt_logits(out, self.logit_scale)
        logits.register_hook(_flush_denormals)
        return self.loss(logits, labels) + out.aux_loss


def _flush_denormals(grad):
    """CE at logit scale 100 (OpenAI's weights) gives class probabilities down to e^-150, i.e. denormal floats,
    which make the CPU matmuls of the text encoder's backward ~8x slower; zeroing them changes no update measurably."""
    return grad.masked_fill(grad.abs() < torch.finfo(grad.dtype).tiny, 0)
