"""The seven "datasets" of ``synth-mtil``, drawn by the synthetic world in the style of MTIL.

MTIL is hard for CLIP in different ways per dataset, and each synthetic dataset here stands for one way:
its own label space, class-name vocabulary, prompt templates and look. micro-clip was pretrained on single
objects of the 300 pretraining concepts in the four pretraining domains, captioned with full concept names,
plus counting captions of one to three copies ("two red striped circles."); everything else below is new
to it, so zero-shot accuracy ranges from near chance to high, as on MTIL (Aircraft 24 % ... Pets 89 %).

========== ======= ==================================================== ============================
dataset    classes what a class is / the look                           the MTIL analogue, why hard
========== ======= ==================================================== ============================
counting   9       1-9 copies of one object on a grid                   MNIST: a label axis CLIP barely
                                                                        knows (pretraining counted to 3)
icons      20      colour + shape, in the unseen low-resolution         CIFAR-100: tiny, blurry images
                   ``mosaic`` and ``faded`` renderings
scenes     15      two objects of two colours side by side, any shape   SUN397: composite scenes, a
                   ("a red object and a blue object")                   caption form never seen
shades     12      an aircraft (a silhouette no pretraining image had)  Aircraft: one kind of object in
                   against a pale sky, photographed, its body in one    a setting of its own, told apart
                   of 12 fine shades whose names no caption used        by a fine difference, with
                   ("teal", "maroon", ...)                              unfamiliar names
shapes     10      the shape, whatever the colour and texture           Caltech101 / Pets: the
                                                                        familiar concept, high zero-shot
styles     8       the rendering domain (4 seen, 4 unseen)              EuroSAT: the label is the
                                                                        image's kind, not its object
textures   8       full-frame texture swatches: the 4 known textures   DTD: texture without an object,
                   and 4 never-seen ones (zigzag, grid, wavy, speckled) half the names unknown
========== ======= ==================================================== ============================

Templates follow the analogue's template set in ZSCL's MTIL (the first one trains, evaluation averages all):
one for counting (MNIST has one), paraphrases of one sentence for shades, scenes and textures (Aircraft and SUN397
have "a/the" pairs, DTD "a photo of a {} texture/pattern/thing/object."), rendering variants for shapes
(Caltech101's "a photo/drawing/painting/sketch of a {}.") and three different forms for styles (EuroSAT). A set of
unrelated sentences would leave most of the ensemble at its zero-shot text features after fine-tuning on the
first: with the earlier three-form sets, 400 steps of whole fine-tuning on counting reached 49.8 % with the
training template and 30.7 % with the ensemble (seed 0, lr 1e-4).

Each dataset has a look no other one has (version 3 of the content, ``SynthMTIL.CONTENT_VERSION``). In version 2
shades showed single objects of any shape in the four pretraining domains, the very images ``shapes`` labels by
shape: fine-tuning one attribute overwrote the other (training shapes cost shades 56.7 points, mean of seeds
0-2), an interference MTIL's datasets, different kinds of image, do not have in that form. The aircraft and
the sky were chosen on the design and on a linear probe of micro-clip's frozen features (100 % on shades' test
images, zero-shot 18.0 %, chance 8.3), before any sequence ran on them.

Every split is deterministic from (world seed, dataset, split, images per class) and independent of the
other datasets, so both task orders see the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from datasets.utils.split_memo import RENDERED
from datasets.utils.synthetic_world import (
    _COLOUR_RGB, ALL_DOMAINS, ALL_TEXTURES, COLOURS, DOMAINS, EXTRA_SHAPES, NUMBERS, SHAPES, TEXTURES,
    SyntheticWorld, _concept_index, _split_seed, _uniform,
)

#: Shade names that no pretraining caption contains, with their base RGB.
SHADES: dict[str, tuple[float, float, float]] = {
    "crimson": (0.75, 0.05, 0.28), "maroon": (0.45, 0.04, 0.10), "coral": (1.00, 0.50, 0.40),
    "gold": (0.90, 0.70, 0.10), "olive": (0.50, 0.50, 0.10), "lime": (0.62, 1.00, 0.20),
    "mint": (0.62, 1.00, 0.78), "teal": (0.00, 0.50, 0.50), "turquoise": (0.25, 0.90, 0.80),
    "navy": (0.05, 0.10, 0.45), "lavender": (0.76, 0.66, 0.96), "magenta": (0.95, 0.10, 0.85),
}
STYLE_NAMES = ("photo", "painting", "sketch", "cartoon", "neon sign", "mosaic", "cluttered photo", "faded photo")
#: A scene is its two objects' colours (an unordered pair), whatever their shapes, textures and sides. Pairs of
#: shapes were the first design: micro-clip's 4 x 4 patches do not resolve two small shapes (a linear probe on
#: its frozen features 14.9 %, 36.4 % on its own training images; 1000 steps of whole fine-tuning 16.5 %;
#: chance 6.7), so nothing could learn that dataset. Colours survive at that size (probe 94.1 %:
#: ``scripts/linear_probe_ceiling.py --benchmark synth-mtil``).
SCENE_COLOURS = ("red", "yellow", "green", "blue", "purple", "white")
SCENE_PAIRS = tuple((a, b) for i, a in enumerate(SCENE_COLOURS) for b in SCENE_COLOURS[i + 1:])
ICON_CLASSES = tuple((c, s) for c, s in zip(
    ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white") * 2,
    ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "crescent", "hexagon", "heart",
     "star", "heart", "circle", "ring", "square", "triangle", "hexagon", "cross", "diamond", "crescent")))
assert len(set(ICON_CLASSES)) == 20 and len(STYLE_NAMES) == len(ALL_DOMAINS)


@dataclass(frozen=True)
class SynthTask:
    """One synthetic dataset: class names, templates (the first is the training prompt) and a renderer
    ``render(world, labels, generator) -> uint8 (N, 3, S, S)``."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    render: Callable[[SyntheticWorld, torch.Tensor, torch.Generator], torch.Tensor]
    analogue: str


def _pick(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(k, (n,), generator=g)


def _random_concepts(world: SyntheticWorld, n: int, g: torch.Generator, shapes=None, colours=None,
                     textures=None) -> torch.Tensor:
    colour = _pick(n, len(COLOURS), g) if colours is None else colours
    texture = _pick(n, len(TEXTURES), g) if textures is None else textures
    shape = _pick(n, len(SHAPES), g) if shapes is None else shapes
    return _concept_index(colour, texture, shape)


def _seen_domains(n: int, g: torch.Generator) -> torch.Tensor:
    return _pick(n, len(DOMAINS), g)


def _render_shapes(world, labels, g):
    ids = _random_concepts(world, labels.numel(), g, shapes=labels)
    return world.render(ids, g, _seen_domains(labels.numel(), g))


def _render_styles(world, labels, g):
    ids = _random_concepts(world, labels.numel(), g)
    return world.render(ids, g, labels)


def _render_icons(world, labels, g):
    colour = torch.tensor([COLOURS.index(c) for c, _ in ICON_CLASSES])[labels]
    shape = torch.tensor([SHAPES.index(s) for _, s in ICON_CLASSES])[labels]
    ids = _random_concepts(world, labels.numel(), g, shapes=shape, colours=colour)
    low_res = torch.tensor([ALL_DOMAINS.index("mosaic"), ALL_DOMAINS.index("faded")])
    return world.render(ids, g, low_res[_pick(labels.numel(), 2, g)])


def _sky(world: SyntheticWorld, n: int, g: torch.Generator) -> torch.Tensor:
    """A pale, nearly grey sky, lighter at the top, with soft clouds: a background no domain has."""
    size = world.image_size
    top = _uniform(n, 0.72, 0.9, g)[:, None, None, None]
    drop = _uniform(n, 0.08, 0.2, g)[:, None, None, None]
    tint = torch.tensor([-0.03, 0.0, 0.04]).view(1, 3, 1, 1) + torch.randn(n, 3, 1, 1, generator=g) * 0.015
    clouds = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(size, size), mode="bicubic",
                           align_corners=False)
    return top - drop * ((1 - world._gy) / 2) + tint + 0.03 * clouds


def _render_shades(world, labels, g):
    """An aircraft against the sky, photographed, its body in one of the shades: one object kind in a
    setting of its own, told apart by a fine difference (FGVC-Aircraft's look)."""
    n = labels.numel()
    rgb = torch.tensor(list(SHADES.values()))[labels]
    photo = torch.full((n,), DOMAINS.index("photo"))
    aircraft = torch.full((n,), len(SHAPES) + EXTRA_SHAPES.index("aircraft"))
    image = world.paint(_sky(world, n, g), _random_concepts(world, n, g), photo, g, scale=(0.55, 0.75),
                        shapes=aircraft, rgb=rgb, textures=torch.zeros(n, dtype=torch.long))
    return world.finish(image, photo, g)


def _render_counting(world, labels, g):
    n = labels.numel()
    domains = torch.tensor([DOMAINS.index("sketch"), DOMAINS.index("cartoon")])[_pick(n, 2, g)]
    return world.render_group(_random_concepts(world, n, g), labels + 1, g, domains, scale=(0.16, 0.2))


def _render_scenes(world, labels, g):
    n = labels.numel()
    domains = _seen_domains(n, g)
    pair = torch.tensor([[COLOURS.index(a), COLOURS.index(b)] for a, b in SCENE_PAIRS])[labels]
    swap = torch.rand(n, generator=g) < 0.5  # which colour is on the left
    left, right = torch.where(swap, pair[:, 1], pair[:, 0]), torch.where(swap, pair[:, 0], pair[:, 1])
    image = world.canvas(domains, g)
    for side, colours in ((-0.48, left), (0.48, right)):
        centre = torch.stack([torch.full((n,), side), torch.zeros(n)]) + (torch.rand(2, n, generator=g) - 0.5) * 0.2
        image = world.paint(image, _random_concepts(world, n, g, colours=colours), domains, g, scale=(0.3, 0.4),
                            centre=centre)
    return world.finish(image, domains, g)


def _render_textures(world, labels, g):
    n, size = labels.numel(), world.image_size
    domains = _seen_domains(n, g)
    rgb = _COLOUR_RGB[_pick(n, len(COLOURS), g)]
    rgb = (rgb * (torch.rand(n, 1, generator=g) * 0.18 + 0.88)).clamp(0, 1)
    dx, dy = world._gx.expand(n, size, size), world._gy.expand(n, size, size)
    on = world.pattern(labels, dx, dy, g)
    image = rgb[:, :, None, None] * (0.4 + 0.6 * on[:, None])
    return world.finish(image, domains, g)


SYNTH_TASKS: dict[str, SynthTask] = {t.name: t for t in (
    SynthTask("counting", NUMBERS, ("a photo of {} objects.",),
              _render_counting, "MNIST"),
    SynthTask("icons", tuple(f"{c} {s}" for c, s in ICON_CLASSES),
              ("a blurry photo of a {}.", "a low resolution photo of a {}.", "a photo of a {}."),
              _render_icons, "CIFAR100"),
    SynthTask("scenes", tuple(f"a {a} object and a {b} object" for a, b in SCENE_PAIRS),
              ("a photo of {}.", "a picture of {}."), _render_scenes, "SUN397"),
    SynthTask("shades", tuple(SHADES), ("a photo of a {} object.", "a photo of the {} object."),
              _render_shades, "Aircraft"),
    SynthTask("shapes", SHAPES, ("a photo of a {}.", "a drawing of a {}.", "a painting of a {}.",
                                 "a sketch of a {}."), _render_shapes, "Caltech101"),
    SynthTask("styles", STYLE_NAMES, ("a {} of an object.", "a {}.", "an object as a {}."), _render_styles,
              "EuroSAT"),
    SynthTask("textures", ALL_TEXTURES, ("a photo of a {} texture.", "a photo of a {} pattern.",
                                      "a photo of a {} thing.", "a photo of a {} object."),
              _render_textures, "DTD"),
)}
ORDERS: dict[str, tuple[str, ...]] = {
    "I": tuple(sorted(SYNTH_TASKS)),       # alphabetical, as MTIL's order I
    "II": ("shades", "shapes", "counting", "textures", "styles", "icons", "scenes"),
}


def make_task_split(world: SyntheticWorld, task: SynthTask, n_per_class: int, split: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels (sorted) of one dataset's split, deterministic from its key (rendered once per
    process: ``datasets/utils/split_memo.py``)."""
    key = ("synth-mtil", task.name, world.seed, world.image_size, split, n_per_class)
    return RENDERED.get(key, lambda: _render_task_split(world, task, n_per_class, key))


def _render_task_split(world: SyntheticWorld, task: SynthTask, n_per_class: int, key: tuple
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(_split_seed(*key))
    labels = torch.arange(len(task.class_names)).repeat_interleave(n_per_class)
    images = torch.empty(labels.numel(), 3, world.image_size, world.image_size, dtype=torch.uint8)
    for start in range(0, labels.numel(), 2048):
        images[start:start + 2048] = task.render(world, labels[start:start + 2048], generator)
    return images, labels
