"""LwF-VR for CLIP, as ZSCL runs it (``mtil/scripts/lwf_vr.sh``): ``lwf-clip`` with a "virtual vocabulary" as the
reference sentences: 1000 sequences of 10 random BPE tokens (``datasets/reference.py``'s ``random`` sentences,
seeded by ``--seed``, the same for every task), each framed ``<start> ids <end>``.

Everything else is ``lwf-clip``'s: the teacher is the model after the previous task (zero-shot CLIP for the first),
the reference images are the current task's training images with the test transform, ZSCL's image and text
distillation with ``--T`` 2 against the teacher's features of the random sentences. Options: ``lwf-clip``'s.

Deviations from the reference (besides ``lwf-clip``'s):
- The random ids leave out the two special tokens (``<start_of_text>``, ``<end_of_text>``): CLIP reads a text's
  feature at its highest token id, so a random end token inside a sequence would move where the feature is read.
  ZSCL draws from the whole vocabulary.
- The sentences are seeded by ``--seed`` and fixed for the run; ZSCL draws them afresh in each task's process from
  the global torch generator.
"""
from __future__ import annotations

from torch import Tensor

from datasets.reference import create_reference_sentences
from models.lwf_clip import LwfClip


class LwfVr(LwfClip):
    NAME = "lwf-vr"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sentences = create_reference_sentences("random", seed=self.args.seed)
        self._tokens = self.sentences.tokens(self.clip.tokenizer)

    def reference_tokens(self) -> Tensor:
        return self._tokens
