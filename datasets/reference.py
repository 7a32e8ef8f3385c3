"""Reference data for distillation methods (ZSCL, LwF-VR): unlabelled images and sentences, by name.

ZSCL (Zheng et al. 2023) distils the frozen pretrained CLIP into the model being fine-tuned on *reference*
data that stands in for what CLIP was pretrained on: ImageNet training images and Conceptual Captions
sentences (``--ref-dataset ImageNet --ref-sentences conceptual_captions``), or 1000 random token sequences
(LwF-VR's "virtual vocabulary", ``--ref-sentences random``). This module is the one place that lists the
reference data that exists here (:data:`REFERENCE_IMAGES`, :data:`REFERENCE_SENTENCES`) and builds it by name
(:func:`create_reference_images`, :func:`create_reference_sentences`); an unknown name lists the valid ones
and the closest match. Nothing is ever downloaded.

Images (what ``--ref_dataset NAME`` will name):

* ``synth-pretrain``: images of the synthetic world's 300 *pretraining* concepts, those micro-clip was
  pretrained on (never a ``seq-synth`` class): the analogue of ImageNet for ZSCL with micro-clip. Rendered in
  memory by ``SyntheticWorld(seed).make_split(pretrain_concepts, k, "reference")``: new images of the
  pretraining concepts in the pretraining domains, not micro-clip's own training images (ZSCL's ImageNet
  images are not CLIP's either). ``n`` images in all (default 3000 = 10 per concept; balanced over
  concepts; ``seed`` is the world seed).
* ``imagenet``: ImageNet training images ``<data_path>/imagenet/train/<wnid>/*.JPEG``. By default the whole
  training set, as ZSCL uses it (a shuffled batch of it per step); ``n`` draws that many, uniformly without
  replacement (seeded).
* ``conceptual_captions``: the Conceptual Captions validation images that ZSCL's ``gather_cc.py`` downloaded, listed
  in ``<data_path>/conceptual_captions/Validation_GCC-1.1.0-Validation_output.csv`` (``title<TAB>filepath`` rows,
  paths relative to that folder): ZSCL's class-incremental reference images (``cil/continual_clip/cc.py``). All the
  listed images by default; ``n`` draws that many (seeded).
* the distribution-shift sets (``datasets/distribution_shifts.py``), their test images as reference images:
  ``imagenet-a``, ``imagenet-r``, ``imagenet-sketch``, ``imagenet-v2``, ``objectnet``, ``imagenet-vid-robust``,
  ``ytbb-robust``, ``fmow``, ``iwildcam``.

Sentences (what ``--ref_sentences NAME`` will name):

* ``synth-captions``: every distinct caption the synthetic world writes for its pretraining concepts (each
  concept x the 4 pretraining domains x the world's phrasings, namings and counts), the captions micro-clip
  was pretrained on: the analogue of Conceptual Captions. It names no benchmark concept.
* ``conceptual_captions``: ZSCL's captions, read straight from the Conceptual Captions *validation* TSV
  ``<data_path>/conceptual_captions/Validation_GCC-1.1.0-Validation.tsv`` (``caption<TAB>url`` lines; the
  first column). ZSCL reads the ``..._output.csv`` its image downloader writes, which keeps only the rows
  whose image downloaded, so its caption count differs between users (ZSCL issues #3, #7); the captions
  need no images, so here they come from the TSV, all of them. An explicit file path as the name reads that
  file (a TSV, an ``_output.csv`` with a ``title`` column, or one caption per line).
* ``random``: LwF-VR's virtual vocabulary, 1000 sequences of 10 random BPE token ids (seeded). These are
  token ids, not strings: :meth:`ReferenceSentences.tokens` frames them as ``<start> ids <end> 0...``.

Every kind is used the same way: images through :meth:`ReferenceImages.batches` (float [0, 1] images with
their positions, so teacher features can be cached per position), sentences through
:meth:`ReferenceSentences.tokens` (the token ids a CLIP text encoder takes); both have ``describe()`` for
feature-cache keys (it hashes the content, so changed data never hits a stale cache).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from datasets.utils.continual_dataset import ContinualDataset, _resize_crop
from datasets.utils.folders import class_folders, list_images
from datasets.utils.image_source import FileImages, ImageSource
from datasets.utils.imagenet import IMAGENET_HOW
from datasets.utils.task_data import LoaderTaskData, TensorTaskData
from utils.errors import UserError, unknown_name_error

#: The file ZSCL's captions come from, and where it is looked up under --data_path.
CC_FOLDER = "conceptual_captions"
CC_VALIDATION_TSV = "Validation_GCC-1.1.0-Validation.tsv"
CAPTIONS_HOW = (f"Download the Conceptual Captions validation split ({CC_VALIDATION_TSV}: '<caption><TAB><url>' "
                f"lines) from https://ai.google.com/research/ConceptualCaptions/download into "
                f"<data_path>/{CC_FOLDER}/ (only the captions are used, no image is needed), or give any "
                f"caption file as the name (a TSV, or one caption per line)")

CC_IMAGES_CSV = "Validation_GCC-1.1.0-Validation_output.csv"
CC_IMAGES_HOW = (f"Download the Conceptual Captions validation images with ZSCL's gather_cc.py (mtil/gather_cc.py "
                 f"{CC_VALIDATION_TSV}), which writes {CC_IMAGES_CSV} ('title<TAB>filepath' rows) and the image "
                 f"folder; put both under <data_path>/{CC_FOLDER}/")

#: Default number of ``synth-pretrain`` images (10 per pretraining concept).
SYNTH_PRETRAIN_N = 3000
#: ``random`` sentences: ZSCL's ``virtual_vocab(length=10, n_class=1000)``.
RANDOM_SENTENCES, RANDOM_LENGTH = 1000, 10
#: open_clip's BPE vocabulary (every CLIP here uses it, micro-clip included): size and special ids.
BPE_VOCAB_SIZE, BPE_SOT, BPE_EOT = 49408, 49406, 49407


# ---- images ----------------------------------------------------------------------------------------------
class ReferenceBatch(NamedTuple):
    indexes: Tensor     #: int64 positions of the images in the reference set (to look up cached features)
    images: Tensor      #: float [0, 1] images (B, 3, H, W), not normalised (the encoder preprocesses them)


class ReferenceImages:
    """A set of unlabelled reference images, in memory (uint8 tensor) or file-backed (``ImageSource``).

    Batches come from the same task-data classes the task loop uses (``TensorTaskData`` slices in memory,
    ``LoaderTaskData`` DataLoader workers for files), as ``ContinualDataset.image_batches`` does: file-backed
    images are resized (shorter side, bicubic) and centre-cropped to ``size`` in the workers; in-memory ones
    come at their own size (the encoder's ``preprocess`` resizes them).
    """

    def __init__(self, images: Tensor | ImageSource, description: dict,
                 image_size: int = ContinualDataset.IMAGE_SIZE, num_workers: int = 2):
        self.images, self.image_size, self.num_workers = images, int(image_size), int(num_workers)
        self._description = dict(description)

    def __len__(self) -> int:
        return int(self.images.shape[0]) if isinstance(self.images, Tensor) else len(self.images)

    def describe(self) -> dict:
        """What identifies these images (for feature-cache keys): name, options and a content fingerprint. A
        cache key adds the encoder, its weights and transform and the batch ``size``, as ``EncodedView`` does."""
        return dict(self._description)

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                size: int | None = None) -> Iterator[ReferenceBatch]:
        """One pass over all images: in order without ``generator`` (to cache features), else shuffled by it."""
        n = len(self)
        labels, positions = torch.zeros(n, dtype=torch.long), torch.arange(n)
        if isinstance(self.images, Tensor):
            data = TensorTaskData(self.images, labels, positions, None, _identity)
        else:
            data = LoaderTaskData(self.images, labels, positions, None, _resize_crop(size or self.image_size),
                                  _identity, self.num_workers)
        for batch in data.batches(batch_size, shuffle=generator is not None, generator=generator):
            yield ReferenceBatch(batch["indexes"], batch["not_aug_inputs"])

    def stream(self, batch_size: int, generator: torch.Generator,
               size: int | None = None) -> Iterator[ReferenceBatch]:
        """Shuffled batches without end, reshuffled after each pass: one ``next()`` per training step, as ZSCL
        draws its reference batches."""
        while True:
            yield from self.batches(batch_size, generator, size)


def _identity(x: Tensor) -> Tensor:
    return x


def _fingerprint(parts: Sequence[str] | Tensor) -> str:
    digest = hashlib.sha256()
    if isinstance(parts, Tensor):
        digest.update(str(tuple(parts.shape)).encode())
        digest.update(parts.contiguous().numpy().tobytes())
    else:
        for part in parts:
            digest.update(part.encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()[:24]


def synth_pretrain_images(n: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` uint8 images (N, 3, 32, 32) of the pretraining concepts and their world concept ids (N,): ``n // 300``
    or one more per concept (which concepts get one more is seeded), sorted by concept; deterministic from
    ``(n, seed)``."""
    from datasets.utils.synthetic_world import SyntheticWorld
    n = SYNTH_PRETRAIN_N if n is None else int(n)
    if n < 1:
        raise UserError(f"synth-pretrain reference images: n must be at least 1, got {n}")
    world = SyntheticWorld(seed)
    concepts = world.pretrain_concepts()
    full, extra = divmod(n, len(concepts))
    per = full + (extra > 0)
    images, labels, _domains = world.make_split(concepts, per, "reference")
    if extra:
        k = torch.arange(labels.numel()) % per               # make_split sorts by label, ``per`` each
        more = torch.randperm(len(concepts), generator=torch.Generator().manual_seed(seed))[:extra]
        keep = (k < full) | torch.isin(labels, more)
        images, labels = images[keep], labels[keep]
    return images, torch.tensor(concepts, dtype=torch.long)[labels]


def imagenet_reference_images(root: str | Path, n: int | None = None, seed: int = 0) -> FileImages:
    """ImageNet training images from the ImageFolder ``<root>/imagenet/train/<wnid>/*`` (``root`` is --data_path;
    it may also be the ImageNet folder): all of them in folder order (``n=None``, ZSCL's reference set), or
    ``n`` drawn uniformly without replacement (seeded)."""
    root = Path(root)
    folder = root / "imagenet" / "train"
    if not folder.is_dir() and (root / "train").is_dir():
        folder = root / "train"
    if not folder.is_dir():
        raise UserError(f"ImageNet reference images: '{root / 'imagenet' / 'train'}' is missing (expected "
                        f"<wnid> class folders of ImageNet training images). {IMAGENET_HOW}")
    names = [(wnid, list_images(folder / wnid)) for wnid in class_folders(folder)]
    total = sum(len(files) for _, files in names)
    if total == 0:
        raise UserError(f"ImageNet reference images: no images under {folder}/<wnid>/. {IMAGENET_HOW}")
    if n is None:
        return FileImages([str(folder / wnid / f) for wnid, files in names for f in files])
    if not 0 < n <= total:
        raise UserError(f"ImageNet reference images: asked for {n}, but {folder} has {total} images")
    starts = np.cumsum([0] + [len(files) for _, files in names])
    paths = []
    for i in np.random.default_rng(seed).choice(total, size=n, replace=False).tolist():
        c = int(np.searchsorted(starts, i, side="right") - 1)
        wnid, files = names[c]
        paths.append(str(folder / wnid / files[i - int(starts[c])]))
    return FileImages(paths)


def _synth_pretrain(data_path: Path, n: int | None, seed: int) -> tuple[Tensor, dict]:
    images, _concepts = synth_pretrain_images(n, seed)
    return images, {"world_seed": seed, "split": "reference", "fingerprint": _fingerprint(images)}


def _imagenet(data_path: Path, n: int | None, seed: int) -> tuple[ImageSource, dict]:
    images = imagenet_reference_images(data_path, n, seed)
    relative = ["/".join(Path(p).parts[-2:]) for p in images.paths]     # <wnid>/<file>: moving the folder is fine
    return images, {"seed": _subset_seed(n, seed), "fingerprint": _fingerprint(relative)}


def cc_reference_images(root: str | Path, n: int | None = None, seed: int = 0) -> FileImages:
    """The Conceptual Captions images listed in ``<root>/conceptual_captions/<CC_IMAGES_CSV>`` (``filepath`` column,
    relative to that folder), in file order (``n=None``) or ``n`` drawn without replacement (seeded)."""
    folder = Path(root) / CC_FOLDER
    csv_path = folder / CC_IMAGES_CSV
    if not csv_path.is_file():
        raise UserError(f"conceptual_captions reference images: '{csv_path}' is missing. {CC_IMAGES_HOW}")
    with open(csv_path, encoding="utf-8", errors="replace", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows or "filepath" not in rows[0]:
        raise UserError(f"conceptual_captions reference images: {csv_path} has no 'filepath' column. {CC_IMAGES_HOW}")
    column = rows[0].index("filepath")
    paths = [str(folder / row[column]) for row in rows[1:] if len(row) > column and row[column].strip()]
    if not paths:
        raise UserError(f"conceptual_captions reference images: {csv_path} lists no image. {CC_IMAGES_HOW}")
    absent = next((p for p in paths if not Path(p).is_file()), None)
    if absent is not None:
        raise UserError(f"conceptual_captions reference images: '{absent}', listed in {csv_path}, is missing. "
                        f"{CC_IMAGES_HOW}")
    return FileImages(_sample(paths, n, seed, str(csv_path)))


def _cc_images(data_path: Path, n: int | None, seed: int) -> tuple[ImageSource, dict]:
    images = cc_reference_images(data_path, n, seed)
    relative = [str(Path(p).relative_to(data_path / CC_FOLDER)) for p in images.paths]
    return images, {"seed": _subset_seed(n, seed), "fingerprint": _fingerprint(relative)}


def _shift_set(source_name: str, split: str = "test"):
    """Reference images from a distribution-shift source (``datasets/sources``): its test images (ObjectNet's
    cropped, WILDS' through wilds), all of them or ``n`` drawn without replacement (seeded). Nothing is downloaded
    and counts are not enforced (reference images need no labels)."""
    def build(data_path: Path, n: int | None, seed: int) -> tuple[ImageSource, dict]:
        import warnings
        from datasets.sources import get_source
        from datasets.utils.image_source import SubsetImages
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images, _ = get_source(source_name)(data_path, download=False, verify_data=False).load_split(split)
        keep = _sample(list(range(len(images))), n, seed, source_name)
        names = getattr(images, "paths", None)
        content = ["/".join(Path(names[i]).parts[-2:]) for i in keep] if names else [str(i) for i in keep]
        return SubsetImages(images, keep), {"source": source_name, "split": split, "seed": _subset_seed(n, seed),
                                            "fingerprint": _fingerprint(content)}
    return build


#: Reference image sets by name: ``builder(data_path, n, seed) -> (images, description)``.
REFERENCE_IMAGES: dict[str, Callable[[Path, int | None, int], tuple[Tensor | ImageSource, dict]]] = {
    "synth-pretrain": _synth_pretrain,
    "imagenet": _imagenet,
    "conceptual_captions": _cc_images,
    # the distribution-shift sets (datasets/distribution_shifts.py), their test images
    "imagenet-a": _shift_set("imagenet_a"),
    "imagenet-r": _shift_set("imagenet_r_test"),
    "imagenet-sketch": _shift_set("imagenet_sketch"),
    "imagenet-v2": _shift_set("imagenet_v2"),
    "objectnet": _shift_set("objectnet"),
    "ytbb-robust": _shift_set("ytbb_robust"),
    "imagenet-vid-robust": _shift_set("imagenet_vid_robust"),
    "fmow": _shift_set("fmow", "train"),
    "iwildcam": _shift_set("iwildcam", "train"),
}


def create_reference_images(name: str, data_path: str | Path = "data", n: int | None = None, seed: int = 0,
                            image_size: int = ContinualDataset.IMAGE_SIZE, num_workers: int = 2) -> ReferenceImages:
    """The reference images ``name`` (a key of :data:`REFERENCE_IMAGES`): ``n`` of them (``None``: the name's
    default, see the module docstring), chosen by ``seed``. ``image_size`` is the default ``size`` of
    file-backed batches; ``num_workers`` the DataLoader workers that decode them."""
    if name not in REFERENCE_IMAGES:
        raise unknown_name_error("reference image set", name, REFERENCE_IMAGES)
    images, extra = REFERENCE_IMAGES[name](Path(data_path), n, seed)
    return ReferenceImages(images, {"name": name, "n": len(images), **extra}, image_size, num_workers)


# ---- sentences -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReferenceSentences:
    """Reference sentences: ``texts`` (strings to tokenize), or ``token_ids`` (N, L) for token-level kinds
    (``random``), exactly one of the two. :meth:`tokens` gives what a CLIP text encoder takes in either case."""

    name: str
    texts: tuple[str, ...] | None = None
    token_ids: Tensor | None = None
    options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if (self.texts is None) == (self.token_ids is None):
            raise ValueError("ReferenceSentences holds either texts or token_ids")

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.token_ids.shape[0])

    def tokens(self, tokenizer: Callable[[list[str]], Tensor]) -> Tensor:
        """LongTensor (N, context length): ``tokenizer(texts)``, or for token ids ZSCL's framing
        ``<start_of_text> ids <end_of_text> 0 ...`` at the tokenizer's context length (open_clip's
        ``SimpleTokenizer`` attributes ``sot_token_id``, ``eot_token_id``, ``context_length``, ``vocab_size``)."""
        if self.texts is not None:
            return tokenizer(list(self.texts))
        sot, eot = getattr(tokenizer, "sot_token_id", None), getattr(tokenizer, "eot_token_id", None)
        context = getattr(tokenizer, "context_length", None)
        if sot is None or eot is None or context is None:
            raise UserError(f"reference sentences '{self.name}' are BPE token ids: they need open_clip's CLIP "
                            f"tokenizer (SimpleTokenizer), not {type(tokenizer).__name__}")
        vocab = getattr(tokenizer, "vocab_size", BPE_VOCAB_SIZE)
        n, length = self.token_ids.shape
        if length + 2 > context or int(self.token_ids.max()) >= vocab:
            raise UserError(f"reference sentences '{self.name}': sequences of {length} ids up to "
                            f"{int(self.token_ids.max())} do not fit this tokenizer (context length {context} "
                            f"with the start and end tokens, vocabulary {vocab})")
        out = torch.zeros(n, context, dtype=torch.long)
        out[:, 0], out[:, 1:length + 1], out[:, length + 1] = sot, self.token_ids, eot
        return out

    def describe(self) -> dict:
        """What identifies these sentences (for feature-cache keys): name, options and a content fingerprint."""
        content = self.texts if self.texts is not None else self.token_ids
        return {"name": self.name, "n": len(self), **dict(self.options), "fingerprint": _fingerprint(content)}


def _subset_seed(n: int | None, seed: int) -> int | None:
    """The seed as a description records it: it picks nothing when the whole set is taken."""
    return None if n is None else seed


def _sample(items: list, n: int | None, seed: int, what: str) -> list:
    """All ``items`` (``n=None``), or ``n`` of them drawn without replacement (seeded)."""
    if n is None:
        return items
    if not 0 < n <= len(items):
        raise UserError(f"reference data: asked for {n}, but {what} has {len(items)}")
    return [items[i] for i in np.random.default_rng(seed).choice(len(items), size=n, replace=False)]


def conceptual_captions(path: str | Path, n: int | None = None, seed: int = 0) -> list[str]:
    """Captions of a local caption file, in file order (``n=None``) or ``n`` drawn without replacement (seeded):
    a Conceptual Captions TSV (``caption<TAB>url`` lines: the first column), an open_clip/ZSCL
    ``_output.csv`` (tab-separated with a ``title`` column in its header), or one caption per line.
    Empty lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference captions: '{path}' is missing. {CAPTIONS_HOW}")
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        header = fh.readline()
        fields = header.rstrip("\r\n").split("\t")
        if "title" in fields and "filepath" in fields:           # the _output.csv of ZSCL's downloader
            column = fields.index("title")
            captions = [row[column].strip() for row in csv.reader(fh, delimiter="\t")
                        if len(row) > column and row[column].strip()]
        else:
            captions = [c for c in (line.split("\t", 1)[0].strip() for line in [header, *fh]) if c]
    if not captions:
        raise UserError(f"reference captions: '{path}' has no captions. {CAPTIONS_HOW}")
    return _sample(captions, n, seed, str(path))


def synth_pretraining_captions() -> list[str]:
    """Every distinct caption of micro-clip's pretraining corpus, in the world's fixed order
    (``SyntheticWorld.pretraining_captions``; captions depend on no world seed)."""
    from datasets.utils.synthetic_world import SyntheticWorld
    return SyntheticWorld(0).pretraining_captions()


def virtual_vocabulary(n: int = RANDOM_SENTENCES, length: int = RANDOM_LENGTH, seed: int = 0) -> Tensor:
    """LwF-VR's "virtual vocabulary" (ZSCL ``helpers.virtual_vocab``): ``n`` sequences of ``length`` BPE token
    ids drawn uniformly (seeded), LongTensor (n, length). ZSCL draws from the whole vocabulary, special tokens
    included; here the two special ids are left out: CLIP reads a text's feature at its highest token id, so
    a random ``<end_of_text>`` inside a sequence would move where the feature is read."""
    return torch.randint(0, BPE_SOT, (n, length), generator=torch.Generator().manual_seed(seed))


def _synth_captions(data_path: Path, n: int | None, seed: int) -> ReferenceSentences:
    texts = _sample(synth_pretraining_captions(), n, seed, "synth-captions")
    return ReferenceSentences("synth-captions", texts=tuple(texts), options=(("seed", _subset_seed(n, seed)),))


def _cc_validation(data_path: Path, n: int | None, seed: int) -> ReferenceSentences:
    folder = data_path / CC_FOLDER
    if not folder.is_dir():
        raise UserError(f"conceptual_captions: '{folder}' is missing (expected {folder / CC_VALIDATION_TSV}). "
                        f"{CAPTIONS_HOW}")
    path = folder / CC_VALIDATION_TSV
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir())[:5]
        raise UserError(f"conceptual_captions: '{path}' is missing ({folder} has: {', '.join(present) or 'nothing'})."
                        f" {CAPTIONS_HOW}")
    return _caption_file(path, n, seed, "conceptual_captions")


def _caption_file(path: Path, n: int | None, seed: int, name: str) -> ReferenceSentences:
    texts = conceptual_captions(path, n, seed)
    return ReferenceSentences(name, texts=tuple(texts), options=(("file", path.name), ("seed", _subset_seed(n, seed))))


def _random(data_path: Path, n: int | None, seed: int) -> ReferenceSentences:
    n = RANDOM_SENTENCES if n is None else int(n)
    if n < 1:
        raise UserError(f"random reference sentences: n must be at least 1, got {n}")
    return ReferenceSentences("random", token_ids=virtual_vocabulary(n, RANDOM_LENGTH, seed),
                              options=(("length", RANDOM_LENGTH), ("seed", seed)))


#: Reference sentence sets by name: ``builder(data_path, n, seed) -> ReferenceSentences``.
REFERENCE_SENTENCES: dict[str, Callable[[Path, int | None, int], ReferenceSentences]] = {
    "synth-captions": _synth_captions,
    "conceptual_captions": _cc_validation,
    "random": _random,
}


def _looks_like_file(name: str) -> bool:
    return "/" in name or "\\" in name or name.lower().endswith((".tsv", ".csv", ".txt")) or Path(name).is_file()


def create_reference_sentences(name: str, data_path: str | Path = "data", n: int | None = None,
                               seed: int = 0) -> ReferenceSentences:
    """The reference sentences ``name`` (a key of :data:`REFERENCE_SENTENCES`, or a caption file's path): all of
    them, or ``n`` (seeded; for ``random``, ``n`` sequences, default 1000)."""
    if name in REFERENCE_SENTENCES:
        return REFERENCE_SENTENCES[name](Path(data_path), n, seed)
    if _looks_like_file(name):
        return _caption_file(Path(name), n, seed, "file")
    raise unknown_name_error("reference sentence set", name, REFERENCE_SENTENCES)
