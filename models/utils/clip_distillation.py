"""``DistillationClipModel``: ZSCL's feature-space distillation on top of ``FinetuneClipModel``, the shared base of
``lwf-clip``, ``lwf-vr`` and ``zscl`` (ZSCL's ``--method ZSCL`` branch of ``mtil/src/models/finetune.py``, which
its LwF and LwF-VR scripts also run, with another teacher and other reference data).

Each training step adds, to ``finetune``'s cross-entropy, a distillation of a frozen *teacher* CLIP into the model
on a batch of *reference images* and a set of *reference sentences*. With f the L2-normalised features, s the
logit scale (the weights' ``logit_scale.exp()``, as ZSCL: 100 for OpenAI's), i / ī the student's / teacher's
features of the B reference images and t̄ the teacher's features of the N reference sentences:

- ``logits_student = s * i @ t.T`` and ``logits_teacher = s * ī @ t̄.T`` (B x N), where t is t̄ by default
  (``--text_distill_target teacher``, ZSCL's code: the distillation then reaches the student's image tower only) or
  the student's own features of the sentences (``--text_distill_target student``: re-encoded with gradients every
  step, so the text tower is distilled too; with 22,500 synth-captions that is a large text batch);
- image loss (``--image_loss``, weight ``--image_loss_weight``): ``distill(logits_teacher, logits_student, T)``,
  each reference image's distribution over the sentences;
- text loss (``--text_loss``, weight ``--text_loss_weight``): the same on the transposed logits (N x B), each
  sentence's distribution over the batch's images;
- ``distill(t, s, T) = T^2 * mean over rows of KL(softmax(t / T) || softmax(s / T))`` with ``--T`` (2), the
  classic ``lwf``'s ``distillation_loss``. ZSCL writes ``T^2 * CE(s / T, softmax(t / T))``: the same gradient,
  larger by the teacher's entropy (a constant), so here the loss is 0 exactly when student and teacher agree.

What a subclass says: the teacher (``self.teacher``, zero-shot CLIP unless its ``begin_task`` refreshes it), the
reference images of a step (:meth:`reference_batch`), every reference image a step can draw
(:meth:`reference_image_batches`) and the reference sentences' tokens (:meth:`reference_tokens`).

What is never recomputed: the teacher is frozen while a task trains, so on first use it encodes every reference
sentence (chunked, without gradients) and every reference image it can be asked about (in fixed-order batches, so
the numbers do not depend on how steps draw them), and keeps them by position until the teacher or the sentences
change (:meth:`teacher_changed`); a subclass may also keep them on disk. A step then costs one extra student pass
over the reference batch (with gradients) on top of ``finetune``'s, where ZSCL's code runs the teacher over the
reference images and over every sentence at every step (4 passes per step).

Per-task learning rates (``--task_lr``) are ``FinetuneClipModel``'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from models.lwf import distillation_loss
from models.utils.finetune_clip import FinetuneClipModel, FinetuneOptions
from models.utils.frozen_net import FrozenNet
from utils.errors import UserError
from utils.options import option
from utils.precision import autocast

#: sentences per chunk when the teacher encodes the reference sentences
TEXT_CHUNK = 1024


@dataclass
class DistillationOptions(FinetuneOptions):
    ls: float = option(0.2, "label smoothing of the cross-entropy (ZSCL's scripts: 0.2)", min=0.0, max=0.99)
    image_loss: bool = option(True, "distil each reference image's distribution over the reference sentences "
                              "(ZSCL's --image_loss)")
    text_loss: bool = option(True, "distil each reference sentence's distribution over the batch's reference images "
                             "(ZSCL's --text_loss, the transposed logits)")
    image_loss_weight: float = option(1.0, "weight of the image distillation loss (ZSCL: 1 on MTIL, 5 on class-IL)",
                                      min=0.0)
    text_loss_weight: float = option(1.0, "weight of the text distillation loss (ZSCL: 1 on MTIL, 5 on class-IL)",
                                     min=0.0)
    T: float = option(2.0, "distillation temperature", min=1e-3)
    text_distill_target: str = option("teacher", "the sentence features on the student's side of the distillation: "
                                      "'teacher' (ZSCL's code: the frozen teacher's, so only the image tower is "
                                      "distilled) or 'student' (the model's own, re-encoded with gradients every "
                                      "step)", choices=("teacher", "student"))


class PositionFeatures:
    """Features of a set of items by position (``features[i]`` is the item at ``positions[i]``)."""

    def __init__(self, positions: Tensor, features: Tensor):
        self.features = features
        self.row_of = torch.full((int(positions.max()) + 1 if positions.numel() else 0,), -1, dtype=torch.long,
                                 device=features.device)
        self.row_of[positions.to(features.device)] = torch.arange(positions.numel(), device=features.device)

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, positions: Tensor) -> Tensor:
        positions = positions.to(self.row_of.device)
        if positions.numel() and (int(positions.max()) >= self.row_of.numel() or bool((self.row_of[positions] < 0).any())):
            raise KeyError("the teacher has no features for some reference positions")
        return self.features[self.row_of[positions]]


def distillation_terms(student_img: Tensor, teacher_img: Tensor, teacher_txt: Tensor, student_txt: Tensor,
                       temperature: float, scale: float) -> tuple[Tensor, Tensor]:
    """ZSCL's (image loss, text loss) from normalised features: image rows over sentences, and transposed, both
    at logit scale ``scale``."""
    student = scale * student_img.float() @ student_txt.float().T
    teacher = scale * teacher_img.float() @ teacher_txt.float().T
    return (distillation_loss(student, teacher, temperature),
            distillation_loss(student.T, teacher.T, temperature))


class DistillationClipModel(FinetuneClipModel):
    Options: ClassVar[type] = DistillationOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: the frozen teacher CLIP: zero-shot CLIP until a subclass refreshes it
        self.teacher = FrozenNet(self.clip)
        self._teacher_text: Tensor | None = None
        self._teacher_images: PositionFeatures | None = None
        self._reference: tuple[Tensor, Tensor] | None = None

    # ---- what a subclass provides ------------------------------------------------------------
    def reference_batch(self, not_aug_inputs: Tensor, indexes: Tensor) -> tuple[Tensor, Tensor]:
        """(reference images of this step, as [0, 1] images or cached features; their positions in the set that
        :meth:`reference_image_batches` goes over), given the training batch."""
        raise NotImplementedError

    def reference_image_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """(positions, [0, 1] images) over every reference image the steps can draw, in a fixed order."""
        raise NotImplementedError

    def reference_tokens(self) -> Tensor:
        """(N, L) token ids of the reference sentences."""
        raise NotImplementedError

    def teacher_changed(self) -> None:
        """Forget the teacher's features (a subclass calls it after changing the teacher or the sentences)."""
        self._teacher_text = None
        self._teacher_images = None

    # ---- the teacher's features, computed once ------------------------------------------------
    @torch.no_grad()
    def encode_teacher_text(self) -> Tensor:
        """(N, D) teacher features (not normalised) of the reference sentences, in chunks."""
        tokens = self.reference_tokens().to(self.device)
        with autocast(self.precision, self.device):
            return torch.cat([self.teacher.net.encode_text(tokens[i:i + TEXT_CHUNK]).float()
                              for i in range(0, tokens.shape[0], TEXT_CHUNK)])

    @torch.no_grad()
    def encode_teacher_images(self) -> PositionFeatures:
        """The teacher's normalised features of every reference image (CLIP's test transform), in fixed-order
        batches: the same numbers however the steps draw the images."""
        positions, feats = [], []
        with autocast(self.precision, self.device):
            for pos, images in self.reference_image_batches():
                positions.append(pos)
                feats.append(self.teacher.net.encode_image(self.clip.preprocess(images.to(self.device))).float())
        return PositionFeatures(torch.cat(positions), F.normalize(torch.cat(feats), dim=-1))

    def teacher_text_features(self) -> Tensor:
        """(N, D) normalised teacher features of the reference sentences (kept until the teacher changes)."""
        if self._teacher_text is None:
            self._teacher_text = F.normalize(self.encode_teacher_text().to(self.device), dim=-1)
        return self._teacher_text

    def teacher_image_features(self, positions: Tensor) -> Tensor:
        """(B, D) normalised teacher features of the reference images at ``positions`` (all of them are encoded on
        first use and kept until the teacher changes)."""
        if self._teacher_images is None:
            self._teacher_images = self.encode_teacher_images()
        return self._teacher_images[positions].to(self.device)

    # ---- the loss -------------------------------------------------------------------------------
    def reference_features(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(student, teacher) normalised features of reference images ``x``. Cached features (2-D, from the
        pretrained image tower, which neither side trains in the frozen-image modes) are both."""
        if x.ndim == 2:
            f = F.normalize(x.float().to(self.device), dim=-1)
            return f, f
        teacher = self.teacher_image_features(positions)
        if not self.mode.image:             # the image tower is the pretrained one on both sides
            return teacher, teacher
        student = F.normalize(self.image_features(self.clip.preprocess(x.to(self.device))), dim=-1)
        return student, teacher

    def distillation(self, x: Tensor, positions: Tensor) -> Tensor:
        """The weighted image + text distillation loss on reference images ``x`` at ``positions``."""
        o = self.opts
        if not (o.image_loss or o.text_loss):
            return torch.zeros((), device=self.device)
        student_img, teacher_img = self.reference_features(x, positions)
        teacher_txt = self.teacher_text_features()
        if o.text_distill_target == "student":
            student_txt = F.normalize(self.clip.encode_text(self.reference_tokens().to(self.device)).float(), dim=-1)
        else:
            student_txt = teacher_txt
        image, text = distillation_terms(student_img, teacher_img, teacher_txt, student_txt, o.T, self.logit_scale)
        return (o.image_loss_weight * image if o.image_loss else 0) + (o.text_loss_weight * text if o.text_loss else 0)

    # ---- training -------------------------------------------------------------------------------
    def observe(self, inputs, labels, not_aug_inputs, indexes=None, epoch=None):
        self._reference = (not_aug_inputs, indexes)
        try:
            return super().observe(inputs, labels, not_aug_inputs, epoch)
        finally:
            self._reference = None

    def train_loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        loss = super().train_loss(inputs, labels)
        if self._reference is None:            # called outside observe (e.g. by a test): no reference batch
            return loss
        return loss + self.distillation(*self.reference_batch(*self._reference))
