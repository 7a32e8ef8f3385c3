"""ZSCL: Zero-Shot Continual Learning (Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning
of Vision-Language Models", ICCV 2023; ``mtil/src/models/finetune.py --method ZSCL``, run by ``mtil/scripts/ZSCL.sh``,
and ``cil/continual_clip/models.py`` for class-incremental benchmarks).

Continual fine-tuning of the whole of CLIP (``finetune``) with two regularisers:

1. Feature-space distillation from the FROZEN zero-shot CLIP (the teacher never changes; LwF's is the previous
   model), on data standing in for CLIP's pretraining data: each step draws a batch of ``--batch_size`` reference
   images (``--ref_dataset``, CLIP's test transform) and uses every reference sentence (``--ref_sentences``); the
   image and text losses of ``models/utils/clip_distillation.py`` with ``--T`` 2, weights ``--image_loss_weight`` and
   ``--text_loss_weight`` (1 and 1 on MTIL, 5 and 5 in ZSCL's class-IL code).
2. The weight ensemble (``--we``, on by default here, every ``--avg_freq`` 100 iterations): the task's model, the one
   evaluated, saved and trained next, is the uniform mean of its starting weights and the snapshots
   (``FinetuneClipModel``). ``--l2 l`` adds ``l * sum ||theta - theta_start||^2`` (ZSCL's script: 1).

The loss: CE with label smoothing ``--ls`` 0.2 on the first-template text classifier + the distillation (+ L2).

Reference data (``datasets/reference.py``): ``--ref_dataset synth-pretrain|imagenet|conceptual_captions`` (images)
and ``--ref_sentences synth-captions|conceptual_captions|random|FILE`` (sentences). On the synthetic datasets
(seq-synth, synth-mtil) they default to ``synth-pretrain`` (new renders of micro-clip's 300 pretraining concepts,
from the dataset's ``--synth_world_seed``) and ``synth-captions`` (micro-clip's pretraining captions); on real
datasets both must be given (ZSCL's MTIL: ``--ref_dataset imagenet --ref_sentences conceptual_captions``), and a
missing ImageNet folder or caption file stops the run with a one-line error. ``--ref_images_n N`` draws N of the
reference images (seeded; ZSCL's ``ImageNetSM --num``).

The teacher's features are computed once: of every sentence, and of every reference image (in fixed-order batches,
through ``--feature_cache``, so later runs read them from disk): a step costs ``finetune``'s plus one student pass
over the reference batch. ``python scripts/bench_zscl.py`` measures it. Options: ``finetune``'s (``--train_mode``,
``--ls``, ``--warmup_iters``, the weight-space options, ``--orthogonal_gradients``, ``--lora``), the distillation's
(``--image_loss``, ``--text_loss``, ``--image_loss_weight``, ``--text_loss_weight``, ``--T``, ``--text_distill_target
teacher|student``, ``--task_lr``) and ``--ref_dataset``, ``--ref_sentences``, ``--ref_images_n``.
``models/config/zscl.yaml`` holds ZSCL's recipes.

Deviations from the reference:
- ``--text_distill_target teacher`` (the default) is ZSCL's code: both sides of the distillation use the teacher's
  sentence features, so its gradient reaches the image tower only; ``student`` puts the model's own sentence features
  on the student's side (what the paper's equations suggest), at the price of encoding every sentence with gradients
  every step.
- The distillation loss is KL, ZSCL's CE minus the teacher's entropy (same gradient; 0 when the models agree).
- ZSCL's teacher re-encodes the reference batch and every caption at every step; here each is encoded once (and the
  reference images' features are kept in memory: 2.6 GB for all of ImageNet with ViT-B/16; ``--ref_images_n``
  bounds it).
- ``conceptual_captions`` sentences are every caption of the validation TSV; ZSCL reads those whose image its
  downloader fetched (``..._output.csv``), which differ between users (pass that file's path to use them).
- ZSCL's MTIL script trains Aircraft and MNIST at lr 5e-5: ``--task_lr aircraft=5e-5 mnist=5e-5`` (in the config).
- Each task draws its reference batches from a stream seeded by ``--seed`` and the task (ZSCL: a shuffled loader
  per task's process), so a resumed run draws the same ones.
- On class-IL benchmarks the CE ranks every class seen so far (as ``finetune``); ZSCL's class-IL code ranks the
  current task's classes, with one prompt ("a bad photo of a {}.") where here the dataset's first template trains
  and all its templates evaluate.
- The WE snapshot also covers buffers (by name), where ZSCL averages ``parameters()`` only (``finetune``'s base).
- The teacher is the weights the run starts from: zero-shot CLIP, or ``--load``'s file. ZSCL, which runs each task
  as a new process loading the previous task's checkpoint, always takes the pretrained CLIP as its teacher.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import Tensor

from datasets.reference import (REFERENCE_IMAGES, REFERENCE_SENTENCES, create_reference_images,
                                create_reference_sentences)
from models.utils.clip_distillation import DistillationClipModel, DistillationOptions, PositionFeatures
from models.utils.clip_model import feature_cache_for
from utils.errors import UserError
from utils.feature_cache import cache_key
from utils.options import option

#: the defaults of --ref_dataset / --ref_sentences on the synthetic datasets (micro-clip's pretraining world)
SYNTH_REFERENCE = ("synth-pretrain", "synth-captions")


@dataclass
class ZsclOptions(DistillationOptions):
    we: bool = option(True, "weight ensemble (ZSCL): the task's model is the uniform mean of its starting weights "
                      "and a snapshot every --avg_freq iterations")
    ref_dataset: Optional[str] = option(None, "reference images: " + ", ".join(REFERENCE_IMAGES) + " (default on the "
                                        "synthetic datasets: synth-pretrain; required on real ones, ZSCL: imagenet)")
    ref_sentences: Optional[str] = option(None, "reference sentences: " + ", ".join(REFERENCE_SENTENCES) + " or a "
                                          "caption file (default on the synthetic datasets: synth-captions; required "
                                          "on real ones, ZSCL: conceptual_captions)")
    ref_images_n: Optional[int] = option(None, "draw this many reference images (seeded by --seed); default: all of "
                                         "the set (synth-pretrain: 3000)", min=1)


def _known(name: str, table) -> str:
    """``name``, or its lower-case spelling when that is a known name (ZSCL writes ``ImageNet``)."""
    return name if name in table or name.lower() not in table else name.lower()


class Zscl(DistillationClipModel):
    NAME = "zscl"
    Options = ZsclOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o, a = self.opts, self.args
        world_seed = getattr(getattr(self.dataset, "options", None), "synth_world_seed", None)
        images, sentences = o.ref_dataset, o.ref_sentences
        if world_seed is not None:
            images, sentences = images or SYNTH_REFERENCE[0], sentences or SYNTH_REFERENCE[1]
        missing = [flag for flag, value in (("--ref_dataset", images), ("--ref_sentences", sentences)) if not value]
        if missing:
            raise UserError(f"zscl on {self.dataset.NAME} needs {' and '.join(missing)} (ZSCL's MTIL: --ref_dataset "
                            f"imagenet --ref_sentences conceptual_captions; only the synthetic datasets have defaults)")
        self.ref_images = create_reference_images(_known(images, REFERENCE_IMAGES), a.data_path, o.ref_images_n,
                                                  seed=world_seed if world_seed is not None else a.seed,
                                                  image_size=self.clip.image_size, num_workers=a.num_workers)
        self.ref_sentences = create_reference_sentences(_known(sentences, REFERENCE_SENTENCES), a.data_path,
                                                        seed=a.seed)
        self._tokens: Tensor | None = None         # tokenized on first use (the teacher's features may be on disk)
        self._ref_stream: Iterator | None = None

    # ---- reference data -------------------------------------------------------------------------
    def begin_task(self, dataset) -> None:
        super().begin_task(dataset)
        generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.current_task)
        self._ref_stream = self.ref_images.stream(self.args.batch_size, generator, self.clip.image_size)

    def end_task(self, dataset) -> None:
        super().end_task(dataset)
        self._ref_stream = None

    def reference_batch(self, not_aug_inputs: Tensor, indexes: Tensor) -> tuple[Tensor, Tensor]:
        batch = next(self._ref_stream)
        return batch.images, batch.indexes

    def reference_image_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.ref_images.batches(self.args.eval_batch_size, size=self.clip.image_size):
            yield batch.indexes, batch.images

    def reference_tokens(self) -> Tensor:
        if self._tokens is None:
            self._tokens = self.ref_sentences.tokens(self.clip.tokenizer)
        return self._tokens

    # ---- the frozen teacher's features, kept on disk ---------------------------------------------
    def _teacher_key(self, **what) -> str:
        t = self.teacher.net
        return cache_key(method="zscl-teacher", encoder=t.name, weights=t.weights_id, precision=self.precision, **what)

    def encode_teacher_text(self) -> Tensor:
        key = self._teacher_key(sentences=self.ref_sentences.describe())
        meta = {"sentences": self.ref_sentences.describe(), "encoder": self.teacher.net.name}
        return feature_cache_for(self.args).get_or_compute("reference-text", key, super().encode_teacher_text, meta)

    def encode_teacher_images(self) -> PositionFeatures:
        key = self._teacher_key(images=self.ref_images.describe(), transform=self.clip.describe_preprocess(),
                                size=self.clip.image_size)
        meta = {"images": self.ref_images.describe(), "encoder": self.teacher.net.name}
        feats = feature_cache_for(self.args).get_or_compute(
            "reference-images", key, lambda: super(Zscl, self).encode_teacher_images().features.cpu(), meta)
        return PositionFeatures(torch.arange(feats.shape[0]), feats.to(self.device))
