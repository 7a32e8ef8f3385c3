"""``ClipModel``: the shared base of methods built on a frozen CLIP (zero-shot, adapters, prompts).

It owns what they share: the CLIP backbone from ``backbone/clip.py`` (``--backbone ViT-B/16``,
``micro-clip``, ...), the input pipeline (cached features of the frozen image encoder, or CLIP's own
preprocessing when ``--feature_cache off``), prompt templates per task, and template-ensemble text
classifiers cached per prompt. Subclasses implement ``observe`` and ``forward`` on image features.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from backbone.clip import ClipBackbone, ClipOptions, canonical_clip_name, create_clip
from datasets.utils.views import EncodedView, PreprocessedView
from models.utils.continual_model import ContinualModel
from utils.feature_cache import FeatureCache, TextFeatureCache, default_cache_dir
from utils.precision import autocast, resolve_precision


def feature_cache_for(args) -> FeatureCache:
    if args.feature_cache == "off":
        return FeatureCache(None)
    return FeatureCache(default_cache_dir() / "features" if args.feature_cache == "auto" else args.feature_cache)


class ClipModel(ContinualModel):
    DEFAULTS: ClassVar[dict] = {"backbone": "micro-clip"}
    CAN_PREDICT_FUTURE: ClassVar[bool] = True
    SUPPORTS_BUFFER: ClassVar[bool] = True
    #: The image tower is never trained, so its features can be cached.
    FROZEN_IMAGE_ENCODER: ClassVar[bool] = True
    #: Whether ``--eval_datasets`` can score this method on other datasets during training: its predictions are
    #: ``s * cos(image features, template-ensemble text features)`` (zero-shot CLIP, the ZSCL family), so
    #: :meth:`other_dataset_logits` scores any dataset's classes exactly as ``forward`` scores its own.
    SCORES_OTHER_DATASETS: ClassVar[bool] = False

    # ---- network and data --------------------------------------------------------------------
    @classmethod
    def backbone_options(cls, name: str) -> type:
        canonical_clip_name(name)
        return ClipOptions

    @classmethod
    def create_backbone(cls, name: str, dataset, options: ClipOptions, load: str | None = None) -> ClipBackbone:
        return create_clip(name, options, load=load)

    def exported_module(self):
        """The open_clip ``CLIP`` model (a method's own modules, prompts or heads, are not part of it)."""
        return self.clip.model

    @classmethod
    def image_encoder_frozen(cls, options) -> bool:
        """Whether image features depend only on the frozen encoder (then they can be cached)."""
        return cls.FROZEN_IMAGE_ENCODER

    @classmethod
    def view_augmentation(cls, dataset, options):
        """The augmentation ``--feature_views`` caches views with (``None``: the dataset's training augmentation)."""
        return None

    @classmethod
    def input_view(cls, dataset, backbone: ClipBackbone, args, device: torch.device, options=None):
        if cls.image_encoder_frozen(options) and args.feature_cache != "off":
            return EncodedView(dataset, backbone, feature_cache_for(args), resolve_precision(args.precision, device),
                               device, batch_size=args.eval_batch_size, views=args.feature_views, seed=args.seed,
                               quiet=args.quiet, augment=cls.view_augmentation(dataset, options))
        return PreprocessedView(dataset, backbone.preprocess)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip: ClipBackbone = self.net
        #: s of every logit s * cos: the weights' own ``logit_scale.exp()`` (100 for OpenAI's) or ``--logit_scale``.
        self.logit_scale: float = self.clip.scale
        self.text_cache = TextFeatureCache(feature_cache_for(self.args),
                                           f"{self.clip.name}|{self.clip.weights_id}|{self.precision}")

    def get_parameters(self):
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("net.")]

    def image_features(self, x: Tensor) -> Tensor:
        """Features of a batch: cached features pass through, images go through the frozen encoder."""
        if x.ndim == 2:
            return x.float()
        with torch.no_grad():
            return self.clip.encode_image(x).float()

    # ---- text --------------------------------------------------------------------------------
    def class_templates(self, label: int) -> tuple[str, ...]:
        return self.dataset.task_templates(int(self.dataset.task_of_label(torch.tensor([label]))[0]))

    def prompts(self, labels: range | list[int], dataset=None) -> tuple[list[str], list[int]]:
        """Every (class, template) prompt of ``labels`` (of ``dataset``, by default the run's), and the class
        position of each prompt."""
        texts, owner = [], []
        for i, label in enumerate(labels):
            if dataset is None:
                templates, name = self.class_templates(label), self.dataset.class_names[label]
            else:
                templates = dataset.task_templates(int(dataset.task_of_label(torch.tensor([label]))[0]))
                name = dataset.class_names[label]
            for template in templates:
                texts.append(template.format(name))
                owner.append(i)
        return texts, owner

    @torch.no_grad()
    def encode_prompts(self, texts: list[str]) -> Tensor:
        feats = []
        for start in range(0, len(texts), 256):
            with autocast(self.precision, self.device):
                feats.append(self.clip.encode_text(self.clip.tokenize(texts[start:start + 256])).float())
        return torch.cat(feats)

    def prompt_features(self, texts: list[str]) -> Tensor:
        """Text features (not normalised) of ``texts`` from the frozen text encoder, through the text cache.
        Methods that train the text encoder override this (the cache holds the pretrained encoder's)."""
        return self.text_cache.get(texts, self.encode_prompts)

    def zero_shot_weights(self, labels: range | list[int] | None = None, dataset=None) -> Tensor:
        """(C, D) classifier: per class, the mean of its L2-normalised template embeddings, re-normalised (the
        classes of ``dataset``, by default the run's; with the current text encoder)."""
        n = self.n_classes if dataset is None else dataset.n_classes
        labels = list(range(n)) if labels is None else list(labels)
        texts, owner = self.prompts(labels, dataset)
        feats = F.normalize(self.prompt_features(texts).to(self.device), dim=-1)
        owner_t = torch.tensor(owner, device=self.device)
        sums = torch.zeros(len(labels), feats.shape[1], device=self.device).index_add_(0, owner_t, feats)
        return F.normalize(sums, dim=-1)

    @torch.no_grad()
    def other_dataset_logits(self, x: Tensor, classifier: Tensor) -> Tensor:
        """``--eval_datasets`` during training: ``s * cos(image features, classifier)`` for a classifier from
        ``zero_shot_weights(dataset=...)`` (ZSCL's framework's per-dataset zero-shot evaluation)."""
        return self.logit_scale * F.normalize(self.image_features(x).float(), dim=-1) @ classifier.T

    def run_stats(self) -> dict:
        cache = getattr(self.dataset, "cache", None)
        return {"images_encoded": self.clip.encoder_calls, "logit_scale": self.logit_scale,
                "feature_cache": None if cache is None or cache.root is None else
                {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}}

    # ---- evaluation and selection ------------------------------------------------------------
    @torch.no_grad()
    def selection_outputs(self, inputs: Tensor) -> dict[str, Tensor]:
        return {"features": self.image_features(inputs), "logits": self.forward(inputs)[:, :self.n_seen_classes]}
