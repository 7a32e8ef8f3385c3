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

Deviations: the backbone is whatever ``--backbone`` says (the original hard-codes ViT-L/14 in fp16);
logits use the fixed scale 100 as the other CLIP methods here; the orthogonality term encodes each
attribute as ``[SOS] P_i . [EOS]`` instead of the original's ``P_i`` followed by literal 'x' filler
tokens; images sharing a top-k combination share one text encoding (exact, only faster); denormal
gradients of the logits are flushed to zero (speed on CPU only). micro-clip's 16-token context cannot
hold 3 x 12 context tokens: ``--model_config best`` uses 3 x 2 on seq-synth.

Cost: evaluation encodes every distinct top-k combination in the test set (up to N!/(N-k)!, 720 by
default) with every class name, so it is far slower than CoOp; a full seq-synth run takes minutes on CPU.
"""
from dataclasses import dataclass

import torch

from models.utils.attriclip_prompts import AttriclipPrompts
from models.utils.clip_model import ClipModel
from models.utils.prompted_clip import prompt_logits
from utils.options import option
from utils.schedulers import warmup_cosine


@dataclass
class AttriclipOptions:
    n_attributes: int = option(10, "attributes in the shared word bank (keys and prompts)", min=1)
    attr_n_ctx: int = option(12, "context tokens per attribute prompt", min=1)
    attr_top_k: int = option(3, "attributes each image selects; its prompt holds attr_top_k x attr_n_ctx tokens",
                             min=1)
    matching_weight: float = option(0.7, "weight of the key-matching loss (the original code used 0.5)", min=0.0)
    ortho_weight: float = option(0.3, "weight of the attribute-orthogonality loss (the original code used 0.1)",
                                 min=0.0)


class Attriclip(ClipModel):
    NAME = "attriclip"
    Options = AttriclipOptions
    DEFAULTS = {"backbone": "micro-clip", "n_epochs": 10, "lr": 1e-3, "batch_size": 32, "optimizer": "sgd",
                "optim_mom": 0.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.opts
        self.prompt = AttriclipPrompts(self.clip, self.dataset.class_names, o.n_attributes, o.attr_n_ctx,
                                       o.attr_top_k, o.matching_weight, o.ortho_weight,
                                       seed=self.args.seed).to(self.device)

    @property
    def scheduler_mode(self) -> str:
        return "iter"

    def get_optimizer(self) -> torch.optim.Optimizer:
        """The run's optimizer (SGD without momentum by default) at AttriCLIP's lr x batch_size / 20."""
        opt = super().get_optimizer()
        for group in opt.param_groups:
            group["lr"] *= self.args.batch_size / 20
        return opt

    def get_scheduler(self, steps_per_epoch: int, n_epochs: int):
        return warmup_cosine(self.optimizer, steps_per_epoch * n_epochs, warmup_fraction=0.0, final_factor=1e-3)

    def logits(self, x, n_classes: int, first_class: int = 0):
        out = self.prompt(x, n_classes, first_class)
        return prompt_logits(out), out.aux_loss

    def forward(self, x):
        return self.logits(x, self.n_classes)[0]

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad()
        if self.buffer is None:          # the original: current task's classes only
            first = self.n_past_classes
            logits, aux = self.logits(inputs, self.n_seen_classes, first)
            labels_in = labels - first
        else:
            inputs_in, labels_in = self.with_replay(inputs, labels)
            logits, aux = self.logits(inputs_in, self.n_seen_classes)
        logits.register_hook(_flush_denormals)
        loss = self.loss(logits, labels_in) + aux
        self.backward_and_step(loss)
        self.remember(examples=not_aug_inputs, labels=labels)
        return loss.item()


def _flush_denormals(grad):
    """CE at logit scale 100 gives class probabilities down to e^-150, i.e. denormal floats, which make the
    CPU matmuls of the text encoder's backward ~8x slower; zeroing them changes no update measurably."""
    return grad.masked_fill(grad.abs() < torch.finfo(grad.dtype).tiny, 0)
