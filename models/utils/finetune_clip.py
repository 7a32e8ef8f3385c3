"""``FinetuneClipModel``: the shared base of methods that fine-tune CLIP itself, as the MTIL framework of
ZSCL does (``mtil/src/models/finetune.py``): ``finetune`` now, and the ZSCL family (lwf-clip, zscl,
icarl-clip, WiSE-FT) on top of it.

What it owns, so that a subclass only adds its own loss terms or weight merges:

- ``--train_mode``: which parameters train (``TRAIN_MODES``). The image tower is every open_clip parameter
  under ``visual.``; the text tower is every other CLIP parameter (``token_embedding``, ``positional_embedding``,
  ``transformer.*``, ``ln_final``, ``text_projection``) except the temperature ``logit_scale`` (and
  ``logit_bias`` where a model has one), which no mode trains. ``ClipBackbone`` freezes everything; this class
  unfreezes exactly what the mode trains, and the optimizer sees exactly those parameters.

  ============== ============ =========== ================================================
  mode           image tower  text tower  classifier
  ============== ============ =========== ================================================
  whole          trained      trained     text features (first template), re-encoded every step
  image          trained      frozen      text features (first template), fixed
  text           frozen       trained     text features (first template), re-encoded every step
  image-fc       trained      frozen      linear head, trained
  image-fc-fixed trained      frozen      linear head, frozen
  fc             frozen       frozen      linear head, trained (a linear probe)
  ============== ============ =========== ================================================

- the linear head (``head``, fc modes only): ``Linear(D, n_classes)`` over L2-normalised image features for
  every class of the dataset, initialised as WiSE-FT/ZSCL's ``ClassificationHead``: weight = 100 x the
  zero-shot template-ensemble classifier, bias 0, so at step 0 the fc modes score exactly as zero-shot CLIP.
- the training loss (``train_loss``, subclasses add terms): cross-entropy with label smoothing ``--ls`` on
  ``s * f_img @ f_txt.T`` (s: the logit scale), the text features being each training class's name in its task's
  FIRST template (re-encoded with gradients every step when the text tower trains), or on the head's logits. The
  training classes (``train_classes``) are the current task's on task-IL sequences of datasets (``SETTING ==
  'task-il'``, e.g. MTIL, as ZSCL), and every class seen so far on class-IL benchmarks (seq-synth, CIFAR).
- evaluation (``forward``): logits over ALL classes, from the current text encoder with every template of each
  class's task (mean of the L2-normalised template embeddings, re-normalised, as ZSCL's evaluation and
  ``ClipModel.zero_shot_weights``), or the head in fc modes. The classifier is computed without gradients once
  and kept until the weights change: ``backward_and_step`` and ``load_state_dict`` drop it; a subclass that
  changes weights any other way (a weight merge) calls ``weights_changed()``.
- the logit scale s is the backbone's never-trained ``logit_scale.exp()``, as ZSCL reads it (100 for OpenAI's
  weights, 27.1 for micro-clip's), or ``--logit_scale``.
- the optimisation: the run's optimizer (AdamW by default, betas 0.9/0.999, ``--optim_wd``) over the trained
  parameters, rebuilt every task (``meta_begin_task``), stepped every iteration by ZSCL's ``cosine_lr``
  (``utils.schedulers.zscl_cosine``: ``--warmup_iters`` linear warm-up, cosine to 0 at the task's last step,
  ``--n_iters`` or the task's epochs x batches); ``--lr_scheduler`` and ``--scheduler_mode`` do not apply.
  ``--task_lr aircraft=5e-5 mnist=5e-5``: ZSCL's 11-dataset scripts (ZSCL, WiSE-FT, LwF, ...) train Aircraft and
  MNIST at 5e-5 and the rest at ``--lr``; a task whose dataset name (``dataset.task_names``, as ``mtil`` and
  ``synth-mtil`` have) is listed trains at that lr (its warm-up and cosine follow it).
- the input: when the image tower is frozen (``text``, ``fc``) cached image features (``--feature_cache``);
  when it trains, CLIP-preprocessed images with the dataset's training augmentation and no cache.
- the weight-space options of ZSCL's framework (``models/utils/weight_space.py``), on the weights of CLIP and the
  head (``weights_module()``: parameters and persistent buffers, paired by name, never by position), so every
  subclass (zscl, lwf-clip) has them; a subclass changes their defaults by redefining the fields:

  - ``--wise_merge a`` (off by default; alone: 0.8, ZSCL's ``WiSE_finetune.sh``) with ``--wise_ft_model
    prev|zeroshot``: at the end of each task ``theta <- a * theta_task + (1 - a) * theta_ref``, the reference being
    the weights at the start of the task (zero-shot CLIP on the first) or zero-shot CLIP.
  - ``--we`` with ``--avg_freq N`` (100): ZSCL's weight ensemble, a uniform running mean that starts as the task's
    starting weights and adds a snapshot after the steps 0, N, 2N, ... and after the task's last step when the
    number of steps is a multiple of N (ZSCL runs ``iterations + 1`` steps, the last one at lr 0, so its final
    snapshot is the final weights); at the end of the task the model BECOMES the mean (what is evaluated, saved
    and trained next).
  - ``--we_wise a`` (alone: 0.98): WE-WiSE, the same ensemble where after each snapshot the mean is pulled toward
    the task's starting weights, ``mean <- a * mean + (1 - a) * theta_start`` (an exponential, not uniform, mix).
  - ``--moving_avg d`` (alone: 0.999) with ``--mv_avg_model n|t|zeroshot``: at the same iterations the TRAINING
    weights are pulled toward an anchor, ``theta <- d * theta + (1 - d) * anchor``, the anchor being the task's
    starting weights (n), zero-shot CLIP (zeroshot), or the training weights just before the previous pull (t).
    Not an EMA teacher: an EMA keeps a second copy that follows the trained weights, which themselves never move
    back; here the trained weights are moved back, and they are the task's model.
  - ``--l2 l``: the loss gets ``l * sum ||theta - theta_start||^2`` over the trained parameters (sum reduction, no
    1/2; theta_start: the weights at the start of the task, zero-shot CLIP on the first, as ZSCL's ``l2_model``).

  At the end of a task (``finish_task_weights``, before the memory update and ``end_task``) the ensemble is
  applied first, then the WiSE merge (on the ensemble). ``--we``, ``--we_wise`` and ``--moving_avg`` exclude one
  another. The state they keep (starting weights, running mean, anchor) lives within one task and is rebuilt at
  the next task's start: checkpoints, written between tasks, hold the final (merged) model, so a resumed run is
  identical. Zero-shot CLIP is the weights the run starts from: the backbone's, or those of ``--load``'s file.

CLIP stays in eval mode (``ClipBackbone.train``): no dropout or BatchNorm statistics change while it trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.utils.views import PreprocessedView
from models.utils.clip_model import ClipModel
from models.utils.lora import DEFAULT_TARGETS as LORA_DEFAULT_TARGETS
from models.utils.weight_space import AnchorPull, WeightEnsemble, l2_penalty, merge_into, snapshot
from utils.errors import UserError
from utils.options import option
from utils.schedulers import zscl_cosine


@dataclass(frozen=True)
class TrainMode:
    image: bool            # the image tower trains
    text: bool             # the text tower trains
    head: bool             # logits come from the linear head instead of text features
    head_trains: bool = False


#: ZSCL's ``--train-mode`` values (the MTIL framework's README): what each one trains.
TRAIN_MODES: dict[str, TrainMode] = {
    "whole": TrainMode(image=True, text=True, head=False),
    "image": TrainMode(image=True, text=False, head=False),
    "text": TrainMode(image=False, text=True, head=False),
    "image-fc": TrainMode(image=True, text=False, head=True, head_trains=True),
    "image-fc-fixed": TrainMode(image=True, text=False, head=True, head_trains=False),
    "fc": TrainMode(image=False, text=False, head=True, head_trains=True),
}

#: CLIP parameters no mode trains (ZSCL leaves ``logit_scale`` out of its optimizer).
NEVER_TRAINED = ("logit_scale", "logit_bias")


def clip_tower(name: str) -> str | None:
    """``'image'``, ``'text'`` or ``None`` (never trained) for a parameter name of an open_clip model."""
    if name in NEVER_TRAINED:
        return None
    return "image" if name.startswith("visual.") else "text"


@dataclass
class FinetuneOptions:
    train_mode: str = option("whole", "what trains: whole (image + text encoders), image, text, image-fc (image "
                             "encoder + a linear head initialised from the zero-shot classifier), image-fc-fixed "
                             "(image encoder, head frozen), fc (the head only: a linear probe)",
                             choices=tuple(TRAIN_MODES))
    ls: float = option(0.0, "label smoothing of the cross-entropy (ZSCL's scripts use 0.2)", min=0.0, max=0.99)
    warmup_iters: int = option(100, "linear warm-up steps of the per-iteration schedule (step s uses "
                               "lr * (s + 1) / warmup_iters), then cosine to 0 at the task's last step", min=0)
    # weight-space options (ZSCL's framework): see the module docstring
    wise_merge: float | None = option(None, "WiSE-FT at the end of each task: theta <- a * theta_task + (1 - a) * "
                                      "theta_ref (--wise_ft_model); off when absent, 0.8 in ZSCL's script",
                                      min=0.0, max=1.0, bare=0.8)
    wise_ft_model: str = option("prev", "the reference of --wise_merge: prev (the weights at the start of the task, "
                                "zero-shot CLIP on the first) or zeroshot", choices=("prev", "zeroshot"))
    we: bool = option(False, "weight ensemble (ZSCL): the task's model is the uniform mean of its starting weights "
                      "and a snapshot every --avg_freq iterations")
    avg_freq: int = option(100, "iterations between the snapshots of --we/--we_wise and the pulls of --moving_avg",
                           min=1)
    we_wise: float | None = option(None, "WE-WiSE: the --we mean is pulled toward the task's starting weights after "
                                   "each snapshot, mean <- a * mean + (1 - a) * theta_start; off when absent",
                                   min=0.0, max=1.0, bare=0.98)
    moving_avg: float | None = option(None, "every --avg_freq iterations pull the training weights toward "
                                      "--mv_avg_model, theta <- d * theta + (1 - d) * anchor (not an EMA teacher); "
                                      "off when absent", min=0.0, max=1.0, bare=0.999)
    mv_avg_model: str = option("n", "the anchor of --moving_avg: n (the task's starting weights), t (the training "
                               "weights before the previous pull) or zeroshot", choices=("n", "t", "zeroshot"))
    l2: float = option(0.0, "adds l2 * sum ||theta - theta_start||^2 over the trained parameters (theta_start: the "
                       "weights at the start of the task); ZSCL: 1", min=0.0)
    task_lr: list[str] = option([], "per-task learning rates as NAME=LR for tasks named in the dataset's task_names "
                                "(ZSCL's MTIL scripts: aircraft=5e-5 mnist=5e-5); other tasks use --lr")
    # orthogonal gradients and LoRA (the MTIL framework's): models/utils/orthogonal_gradients.py, models/utils/lora.py
    orthogonal_gradients: int = option(0, "OGD: collect N + 1 gradient snapshots per task on the trained attention, "
                                       "MLP and LayerNorm weights, keep their SVD basis, and project every later "
                                       "step's gradient off the bases of the earlier tasks; 0: off", min=0)
    ogd_energy: float = option(0.97, "the share of the snapshots' energy (squared singular values) each task's "
                               "basis keeps", min=0.0, max=1.0)
    orthogonal_gradients_path: str | None = option(None, "a basis file ({name: (k, D) tensor}, e.g. from "
                                                   "scripts/convert_grad_to_basis.py) projected off from the first "
                                                   "task on (with --orthogonal_gradients, the tasks' bases add to it)")
    lora: bool = option(False, "train LoRA adapters (peft) on --lora_target_modules of the trained towers instead "
                        "of the weights themselves")
    lora_r: int = option(8, "LoRA rank", min=1)
    lora_alpha: float = option(16.0, "LoRA alpha: the update is (alpha / r) * B @ A", min=0.0)
    lora_dropout: float = option(0.1, "dropout on the LoRA branch's input (peft's nn.Linear targets only)",
                                 min=0.0, max=0.99)
    lora_target_modules: list[str] = option(list(LORA_DEFAULT_TARGETS), "module names or suffixes to adapt "
                                            "(python scripts/list_clip_layers.py): nn.Linear layers, and attn for "
                                            "the attention blocks' q, k, v and o")
    lora_shared: bool = option(False, "the framework's shared LoRA instead of peft: one A/B master per (layer "
                               "type, dimensions), the same parameters in every layer of that key")
    lora_shared_split_qkvo: bool = option(False, "with --lora_shared: one master per attention projection type "
                                          "(q, k, v, o) instead of one for all four")


def zero_shot_head(weights: Tensor, scale: float) -> nn.Linear:
    """WiSE-FT's ``ClassificationHead`` on normalised features: weight = ``scale`` x the (C, D) zero-shot
    classifier, bias 0, so that its logits equal zero-shot CLIP's."""
    head = nn.Linear(weights.shape[1], weights.shape[0], device=weights.device)
    with torch.no_grad():
        head.weight.copy_(scale * weights)
        head.bias.zero_()
    return head


class FinetuneClipModel(ClipModel):
    Options: ClassVar[type] = FinetuneOptions
    #: --task_lr by task name, parsed by the first get_optimizer (in ContinualModel.__init__): a bad value is an
    #: error before any training
    _task_lr: dict[str, float] | None = None
    SCORES_OTHER_DATASETS: ClassVar[bool] = True
    #: no memory unless a subclass replays (icarl-clip sets REQUIRES_BUFFER)
    SUPPORTS_BUFFER: ClassVar[bool] = False
    DEFAULTS: ClassVar[dict] = {"backbone": "micro-clip", "optimizer": "adamw", "lr": 1e-5, "batch_size": 64}

    # ---- network and data --------------------------------------------------------------------
    @classmethod
    def train_mode_of(cls, options) -> TrainMode:
        return TRAIN_MODES[(options if options is not None else cls.Options()).train_mode]

    @classmethod
    def image_encoder_frozen(cls, options) -> bool:
        return not cls.train_mode_of(options).image

    @classmethod
    def input_view(cls, dataset, backbone, args, device, options=None):
        if cls.image_encoder_frozen(options):
            return super().input_view(dataset, backbone, args, device, options)
        return PreprocessedView(dataset, backbone.preprocess, keep_augmentation=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = self.train_mode_of(self.opts)
        o = self.opts
        trains = {"image": self.mode.image, "text": self.mode.text, None: False}
        for name, p in self.clip.model.named_parameters():
            p.requires_grad_(trains[clip_tower(name)])
        if self.mode.head:
            self.head = zero_shot_head(self.zero_shot_weights(), self.logit_scale)
            self.head.requires_grad_(self.mode.head_trains)
        if (o.lora_shared or o.lora_shared_split_qkvo) and not o.lora:
            raise UserError("--lora_shared and --lora_shared_split_qkvo need --lora 1")
        self.lora = self._inject_lora() if o.lora else None
        self.ogd = self._make_ogd()
        self._classifier: Tensor | None = None           # the evaluation classifier while weights are unchanged
        self._train_text: dict[tuple[int, int], Tensor] = {}   # tokens (text trains) or features (frozen text)
        averages = [flag for flag, on in (("--we", o.we), ("--we_wise", o.we_wise is not None),
                                          ("--moving_avg", o.moving_avg is not None)) if on]
        if len(averages) > 1:
            raise UserError(f"{' and '.join(averages)} exclude one another: pass one of them")
        wants_zero_shot = (o.wise_merge is not None and o.wise_ft_model == "zeroshot") or \
            (o.moving_avg is not None and o.mv_avg_model == "zeroshot")
        self._zero_shot_state = snapshot(self.weights_module()) if wants_zero_shot else None
        self._start_state: dict[str, Tensor] | None = None    # the task's starting weights (L2, WiSE prev)
        self._ensemble: WeightEnsemble | None = None
        self._pull: AnchorPull | None = None
        self._task_steps = 0

    def _inject_lora(self):
        from models.utils.lora import LoraInjection
        o = self.opts
        if o.lora_shared_split_qkvo and not o.lora_shared:
            raise UserError("--lora_shared_split_qkvo needs --lora_shared 1")
        towers = [t for t, on in (("image", self.mode.image), ("text", self.mode.text)) if on]
        if not towers:
            raise UserError(f"--lora adapts CLIP's towers, and --train_mode {o.train_mode} trains neither")
        total = sum(p.numel() for p in self.clip.model.parameters())
        lora = LoraInjection(self.clip.model, o.lora_target_modules, towers, o.lora_r, o.lora_alpha, o.lora_dropout,
                             shared=o.lora_shared, split_qkvo=o.lora_shared_split_qkvo)
        self.lora_stats = {"backend": "shared" + ("-split-qkvo" if o.lora_shared_split_qkvo else "")
                           if o.lora_shared else "peft", "trainable": lora.trainable_count(), "clip_parameters": total,
                           "targeted_modules": len(lora.targeted)}
        print(f"LoRA ({self.lora_stats['backend']}, r={o.lora_r}, alpha={o.lora_alpha:g}, {len(lora.targeted)} "
              f"modules): {lora.trainable_count():,} trainable parameters of {total:,} "
              f"({100 * lora.trainable_count() / total:.2f} %)", flush=True)
        return lora

    def _make_ogd(self):
        o = self.opts
        if not o.orthogonal_gradients and o.orthogonal_gradients_path is None:
            return None
        from models.utils.orthogonal_gradients import OrthogonalGradients
        ogd = OrthogonalGradients(self.clip.model, o.orthogonal_gradients, o.ogd_energy, self.device)
        if o.orthogonal_gradients_path is not None:
            ogd.load_basis_file(o.orthogonal_gradients_path)
        return ogd

    def weights_module(self):
        """What the weight-space options merge: CLIP (``net``) and the head in fc modes, named as in this model's
        ``state_dict`` (``net.model.visual...``, ``head.weight``); with ``--lora`` the effective weights of the
        merged model under the same names (``models/utils/lora.py``'s ``LoraWeights``)."""
        modules = {"net": self.net}
        if self.mode.head:
            modules["head"] = self.head
        if self.lora is not None:
            from models.utils.lora import LoraWeights
            return LoraWeights(nn.ModuleDict(modules), self.lora, "net.model.")
        return nn.ModuleDict(modules)

    def exported_module(self) -> nn.Module:
        """The open_clip model; with ``--lora`` its LoRA merged in, under open_clip's plain names."""
        return self.clip.model if self.lora is None else self.lora.merged_module()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.lora is not None:              # CLIP stays in eval mode; LoRA's dropout follows the model
            for m in self.lora.dropout_modules():
                m.train(mode)
        return self

    def trained_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this mode trains, by name (``net.model.visual...``, ``head.weight``, ...)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def get_parameters(self):
        return list(self.trained_parameters().values())

    # ---- per-task learning rates ----------------------------------------------------------------
    def _parse_task_lr(self, entries: list[str]) -> dict[str, float]:
        names = getattr(self.dataset, "task_names", None)
        out = {}
        for entry in entries:
            name, sep, value = entry.partition("=")
            try:
                lr = float(value) if sep else None
            except ValueError:
                lr = None
            if lr is None or not math.isfinite(lr) or lr < 0:
                raise UserError(f"--task_lr: '{entry}' is not NAME=LR with a finite LR >= 0 (e.g. aircraft=5e-5)")
            if names is None:
                raise UserError(f"--task_lr: {self.dataset.NAME} does not name its tasks; use --lr")
            if name not in names:
                raise UserError(f"--task_lr: {self.dataset.NAME} has no task '{name}' (its tasks: "
                                f"{', '.join(names)})")
            out[name] = lr
        return out

    def task_learning_rate(self, task: int | None = None) -> float:
        """The lr of ``task`` (default: the current one): its ``--task_lr``, else ``--lr``."""
        task = self.current_task if task is None else task
        names = getattr(self.dataset, "task_names", None)
        if self._task_lr is None:
            self._task_lr = self._parse_task_lr(self.opts.task_lr)
        if self._task_lr and names is not None and task < len(names):
            return self._task_lr.get(names[task], self.args.lr)
        return self.args.lr

    def get_optimizer(self):
        optimizer = super().get_optimizer()
        lr = self.task_learning_rate()
        if lr != self.args.lr:                 # only a --task_lr task changes the optimizer's lr
            for group in optimizer.param_groups:
                group["lr"] = lr
        return optimizer

    def get_scheduler(self, steps_per_epoch: int, n_epochs: int):
        total = self.args.n_iters if self.args.n_iters is not None else steps_per_epoch * n_epochs
        if self.ogd is not None:
            self.ogd.begin_task(total)
        return zscl_cosine(self.optimizer, total, self.opts.warmup_iters)

    @property
    def scheduler_mode(self) -> str:
        return "iter"

    def image_features(self, x: Tensor) -> Tensor:
        """Cached features pass through; images go through the image encoder, with gradients if it trains."""
        if x.ndim == 2 or not self.mode.image:
            return super().image_features(x)
        return self.clip.encode_image(x).float()

    # ---- text --------------------------------------------------------------------------------
    def prompt_features(self, texts: list[str]) -> Tensor:
        if self.mode.text:                      # the cache holds the pretrained text encoder's features
            return self.encode_prompts(texts)
        return super().prompt_features(texts)

    def train_classes(self) -> tuple[int, int]:
        """``[lo, hi)``: the labels the training loss ranks (the current task's on task-IL sequences of
        datasets, as ZSCL's MTIL; every class seen so far on class-IL benchmarks)."""
        lo = self.n_past_classes if self.dataset.SETTING == "task-il" else 0
        return lo, self.n_seen_classes

    def train_prompts(self, lo: int, hi: int) -> list[str]:
        """Each class's name in the FIRST template of its task (what ZSCL trains with)."""
        return [self.class_templates(c)[0].format(self.dataset.class_names[c]) for c in range(lo, hi)]

    def train_text_features(self, lo: int, hi: int) -> Tensor:
        """(hi - lo, D) normalised text features of the training prompts: re-encoded with gradients on every
        call when the text tower trains (its tokens are kept), computed once when it is frozen."""
        key = (lo, hi)
        if key not in self._train_text:
            texts = self.train_prompts(lo, hi)
            self._train_text[key] = self.clip.tokenize(texts) if self.mode.text else \
                F.normalize(self.prompt_features(texts).to(self.device), dim=-1)
        if not self.mode.text:
            return self._train_text[key]
        return F.normalize(self.clip.encode_text(self._train_text[key]).float(), dim=-1)

    def eval_classifier(self) -> Tensor:
        """(C, D) template-ensemble classifier of every class from the current text encoder (kept until the
        weights change)."""
        if self._classifier is None:
            with torch.no_grad():
                self._classifier = self.zero_shot_weights()
        return self._classifier

    def weights_changed(self) -> None:
        """Forget what was computed from the weights (the evaluation classifier)."""
        self._classifier = None

    # ---- training and evaluation -------------------------------------------------------------
    def train_logits(self, inputs: Tensor) -> tuple[Tensor, int]:
        """Logits of a training batch over the training classes, and the first training label."""
        lo, hi = self.train_classes()
        f = F.normalize(self.image_features(inputs), dim=-1)
        if self.mode.head:
            return F.linear(f, self.head.weight[lo:hi], self.head.bias[lo:hi]), lo
        return self.logit_scale * f @ self.train_text_features(lo, hi).T, lo

    def train_loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        logits, lo = self.train_logits(inputs)
        return F.cross_entropy(logits.float(), labels - lo, label_smoothing=self.opts.ls)

    def observe(self, inputs, labels, not_aug_inputs, epoch=None):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.train_loss(inputs, labels)
        self.backward_and_step(loss)
        return loss.item()

    def backward_and_step(self, loss: Tensor) -> None:
        """The one place a training step happens: adds the ``--l2`` penalty to ``loss``, steps, then runs the
        averaging of ``--we``/``--we_wise``/``--moving_avg`` when the step's index is a multiple of ``--avg_freq``."""
        if self.opts.l2 > 0:
            weights = self.weights_module()
            loss = loss + self.opts.l2 * l2_penalty(weights if self.lora is None else weights.trained_weights(),
                                                    self._start_state)
        if self.ogd is None:
            super().backward_and_step(loss)
        elif self.scaler is None:               # OGD: the current gradient, projected before the step
            self.shard_loss(loss).backward()
            self.reduce_gradients(self.optimizer)
            self.ogd.after_backward(self._task_steps)
            self.optimizer.step()
        else:
            self.scaler.scale(self.shard_loss(loss)).backward()
            self.reduce_gradients(self.optimizer)
            self.scaler.unscale_(self.optimizer)
            self.ogd.after_backward(self._task_steps)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.weights_changed()
        self._average_at(self._task_steps)
        self._task_steps += 1

    # ---- weight space ------------------------------------------------------------------------
    def begin_task(self, dataset) -> None:
        """Keep what this task's weight-space options need from its starting weights."""
        if self.lora is not None:              # fresh adapters on the merged weights, seeded by the run and the task
            self.lora.reset(self.args.seed * 1000 + self.current_task)
        o, weights = self.opts, self.weights_module()
        wants_start = o.l2 > 0 or (o.wise_merge is not None and o.wise_ft_model == "prev")
        self._start_state = snapshot(weights) if wants_start else None
        self._task_steps = 0
        if o.we or o.we_wise is not None:
            fixed = weights if o.we_wise is not None else None
            self._ensemble = WeightEnsemble(weights, fixed=fixed, fixed_alpha=o.we_wise)
        if o.moving_avg is not None:
            anchor = self._zero_shot_state if o.mv_avg_model == "zeroshot" else weights
            self._pull = AnchorPull(anchor, o.moving_avg, follow=o.mv_avg_model == "t")

    def _average_at(self, iteration: int) -> None:
        if iteration % self.opts.avg_freq:
            return
        if self._ensemble is not None:
            self._ensemble.update(self.weights_module())
        if self._pull is not None:
            self._pull.pull(self.weights_module())
            self.weights_changed()

    def meta_end_task(self, dataset) -> None:
        self.finish_task_weights()
        if self.ogd is not None:
            self.ogd.end_task()
        if self.lora is not None:              # the task's update joins the weights (B = 0)
            self.lora.fold()
            self.weights_changed()
        super().meta_end_task(dataset)

    def checkpoint_state(self) -> dict:
        state = super().checkpoint_state()
        if self.ogd is not None:
            state["orthogonal_gradients"] = self.ogd.state_dict()
        return state

    def load_checkpoint_state(self, state) -> None:
        super().load_checkpoint_state(state)
        if self.ogd is not None:
            self.ogd.load_state_dict(state["orthogonal_gradients"])

    def run_stats(self) -> dict:
        stats = super().run_stats()
        stats["trainable_parameters"] = sum(p.numel() for p in self.trained_parameters().values())
        if self.lora is not None:
            stats["lora"] = self.lora_stats
        if self.ogd is not None:
            stats["orthogonal_gradients"] = self.ogd.size()
        return stats

    def finish_task_weights(self) -> None:
        """The task's final model, before anything else at the task's end (memory selection, ``end_task``): ZSCL's
        last iteration (its loop runs one step more, at lr 0: the same weights) takes its snapshot, then the model
        becomes the ensemble, then the WiSE merge."""
        o, weights = self.opts, self.weights_module()
        self._average_at(self._task_steps)
        if self._ensemble is not None:
            self._ensemble.apply_to(weights)
        if o.wise_merge is not None:
            merge_into(weights, self._zero_shot_state if o.wise_ft_model == "zeroshot" else self._start_state,
                       o.wise_merge)
        self.weights_changed()
        self._start_state, self._ensemble, self._pull = None, None, None

    def load_state_dict(self, *args, **kwargs):
        result = super().load_state_dict(*args, **kwargs)
        self.weights_changed()
        return result

    def forward(self, x: Tensor) -> Tensor:
        f = F.normalize(self.image_features(x), dim=-1)
        if self.mode.head:
            return self.head(f)
        return self.logit_scale * f @ self.eval_classifier().T
