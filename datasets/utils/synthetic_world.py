"""An embedded, procedurally generated vision-language world.

Images of compositional concepts (colour x texture x shape) are rendered in
memory from a seed, so the ``seq-synth`` benchmark and the tiny-CLIP
pretraining corpus need no files, no network and no licences.

Design: what makes the real benchmarks hard for CLIP, and the analogue here
---------------------------------------------------------------------------
micro-clip (``backbone/micro_clip.py``) is pretrained on a corpus that leaves
things out, and the benchmarks contain them, so zero-shot accuracy is imperfect
transfer and there is something left to learn:

* **Unseen combinations** (the original gap). A concept is
  ``(colour, texture, shape)``: 10 x 4 x 10 = 400 concepts; the 100 benchmark
  concepts are disjoint from the 300 pretraining ones, and two benchmark classes
  share each (colour, shape) pair, so telling them apart is fine-grained: it
  needs the texture too.
* **Unseen styles** (ImageNet-R, -Sketch: renditions the model never saw).
  Pretraining images are in four domains (``DOMAINS``: photo, painting, sketch,
  cartoon). Four more (``UNSEEN_DOMAINS``) appear only in benchmarks:
  ``neon`` (a glowing coloured outline on black, the interior dim),
  ``mosaic`` (**low resolution**: 2x2-pixel blocks, posterised to 4 levels, as a
  32-pixel CIFAR image is), ``clutter`` (**clutter**: 4 smaller objects of other
  concepts behind a smaller main object, as in real photos) and ``faded``
  (washed-out colours under haze and strong sensor noise). ``seq-synth``'s
  images cycle over all eight domains (``BENCHMARK_DOMAINS``). The label stays
  in the image (a linear probe on micro-clip's features recovers much of it),
  but the text-image alignment of the new styles is off.
* **Partial captions.** Pretraining captions name all three attributes in only
  55 % of cases; the others name (colour, shape), (texture, shape) or the shape
  alone (``NAMINGS``), as alt-text rarely names everything. 20 % of pretraining
  images show two or three copies of a concept, captioned with the number
  (``MAX_PRETRAIN_COUNT``): micro-clip can count a little, but not to nine.
* **Unseen vocabulary and label axes** live in ``synth-mtil``
  (``datasets/utils/synthetic_tasks.py``): shade names no caption ever used,
  textures no image ever had, counts, scenes of two objects, the style itself
  as the label.

Details
-------
* Concept ``index = colour * 40 + texture * 10 + shape`` (indices into
  ``COLOURS``, ``TEXTURES``, ``SHAPES``), so ``SyntheticWorld.concepts`` has a
  fixed order.
* Names are three words, ``"<colour> <texture> <shape>"`` ("red striped
  circle"), except plain ones, which read ``"plain red circle"``.  Plain is
  spelled out so every name carries all three attributes (a text encoder must
  bind "plain" too).
* Domains are nuisance variation: they change background, edges, outline,
  shading, resolution, clutter and noise but never the concept.  Backgrounds
  are low-saturation so they cannot be mistaken for a shape colour.
* Textures: "on" pixels get the concept colour, "off" pixels a much darker
  version of it.  Striped/checkered are half on / half off; dotted draws dark
  dots on the coloured shape so the colour stays dominant.
* A rendering is three public stages, ``canvas`` (background), ``paint`` (one
  object per image, attributes overridable) and ``finish`` (the capture:
  resolution, haze, noise, posterisation), which other synthetic datasets
  compose into scenes.
* The benchmark / pretraining split is independent of the world seed (see
  :func:`_benchmark_split`), so every run evaluates the same 100 classes.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from datasets.utils.split_memo import RENDERED

COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white",
)
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
#: Patterns that appear in no concept and no pretraining image (synth-mtil's texture dataset uses them).
UNSEEN_TEXTURES: tuple[str, ...] = ("zigzag", "grid", "wavy", "speckled")
ALL_TEXTURES: tuple[str, ...] = TEXTURES + UNSEEN_TEXTURES
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "cross", "ring", "star", "crescent", "hexagon", "heart",
)
#: The pretraining domains: every image micro-clip was trained on is in one of these.
DOMAINS: tuple[str, ...] = ("photo", "painting", "sketch", "cartoon")
#: Domains micro-clip never saw, each from something that makes real benchmarks hard (module docstring).
UNSEEN_DOMAINS: tuple[str, ...] = ("neon", "mosaic", "clutter", "faded")
#: Every rendering domain; a domain index passed to ``render`` indexes this tuple.
ALL_DOMAINS: tuple[str, ...] = DOMAINS + UNSEEN_DOMAINS
#: ``seq-synth``'s images cycle over every domain: half are in styles micro-clip never saw.
BENCHMARK_DOMAINS: tuple[str, ...] = ALL_DOMAINS

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a painting of a {}.",
    "a sketch of a {}.",
    "a cartoon {}.",
    "an image of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
)

# Base RGB of each colour (order of COLOURS): chosen to be pairwise distinct at
# 32x32 after jitter and darkening.
_COLOUR_RGB = torch.tensor([
    [0.92, 0.10, 0.10],  # red
    [1.00, 0.55, 0.05],  # orange
    [0.98, 0.92, 0.10],  # yellow
    [0.10, 0.72, 0.15],  # green
    [0.10, 0.88, 0.92],  # cyan
    [0.12, 0.25, 0.98],  # blue
    [0.58, 0.15, 0.85],  # purple
    [1.00, 0.55, 0.80],  # pink
    [0.55, 0.30, 0.10],  # brown
    [0.97, 0.97, 0.97],  # white
])
_OFF_FACTOR = 0.4  # brightness of the "off" texture pixels relative to the colour

# Caption phrasings; {d} is the domain word, {n} the concept name, {a} its article.
_CAPTION_PHRASES: tuple[str, ...] = (
    "a {d} of {a} {n}.",
    "a {d} of the {n}.",
    "{a} {n} in {d} style.",
    "a {d} showing {a} {n}.",
    "an image of {a} {n}.",
    "{a} {n}.",
)

#: Which attributes a caption names, and how often (alt-text rarely names everything).
NAMINGS: tuple[str, ...] = ("full", "colour", "texture", "shape")
_NAMING_WEIGHTS = torch.tensor([0.55, 0.2, 0.1, 0.15])
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Pretraining images show one to this many copies of a concept ("three red circles").
MAX_PRETRAIN_COUNT = 3

_BENCHMARK_SEED = 20240611  # fixed: the benchmark must not depend on the world seed
_CHUNK = 4096  # images rendered at once by make_split (bounds peak memory)


@dataclass(frozen=True)
class Concept:
    """One class of the world; ``index`` is its position in ``SyntheticWorld.concepts``."""

    index: int
    colour: str
    texture: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.texture} {self.colour} {self.shape}" if self.texture == "plain" \
            else f"{self.colour} {self.texture} {self.shape}"


def _concept_index(colour: int, texture: int, shape: int) -> int:
    return (colour * len(TEXTURES) + texture) * len(SHAPES) + shape


@lru_cache(maxsize=1)
def _benchmark_split() -> tuple[int, ...]:
    """The 100 benchmark concept ids, in class order.

    Construction (deterministic, independent of any world seed):
    * every colour and every shape occurs exactly 10 times, every texture 25
      times; the benchmark uses 50 (colour, shape) pairs, each with exactly two
      textures, so telling benchmark classes apart needs all three attributes;
    * the remaining 300 pretraining concepts therefore contain every colour
      (30x), texture (75x) and shape (30x), every (colour, shape) pair (>= 2x)
      and every (colour, texture) / (texture, shape) pair, so zero-shot on the
      benchmark is transfer to unseen *combinations* of seen attributes;
    * the class order is shuffled so each 10-class task mixes attributes.
    Only ``random.Random.random`` is used: its sequence is stable across
    Python versions, unlike ``shuffle``/``sample``.
    """
    rng = random.Random(_BENCHMARK_SEED)

    def permutation(n: int) -> list[int]:
        keys = [rng.random() for _ in range(n)]
        return sorted(range(n), key=keys.__getitem__)

    colour_perm, shape_perm = permutation(len(COLOURS)), permutation(len(SHAPES))
    # Each texture appears in 2 of these 4 pairs, so textures come out balanced.
    texture_pairs = ((0, 1), (2, 3), (0, 2), (1, 3))
    chosen = []
    k = 0
    for a in range(len(COLOURS)):
        for b in range(5):  # circulant design: colour slot a gets shape slots a..a+4
            colour, shape = colour_perm[a], shape_perm[(a + b) % len(SHAPES)]
            for texture in texture_pairs[k % len(texture_pairs)]:
                chosen.append(_concept_index(colour, texture, shape))
            k += 1
    order = permutation(len(chosen))
    return tuple(chosen[i] for i in order)


# --------------------------------------------------------------------------
# Signed distance functions of the shapes, in shape units (the shape spans
# about [-1, 1]^2, y pointing up).  Negative inside.  Most follow Inigo
# Quilez's exact 2-D SDFs so outlines have an even width.
# --------------------------------------------------------------------------

def _length(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def _sd_box(x, y, hx: float, hy: float):
    dx, dy = x.abs() - hx, y.abs() - hy
    return _length(dx.clamp(min=0), dy.clamp(min=0)) + torch.maximum(dx, dy).clamp(max=0)


def _sd_circle(x, y):
    return _length(x, y) - 0.9


def _sd_square(x, y):
    return _sd_box(x, y, 0.75, 0.75)


def _sd_triangle(x, y):
    r, k = 0.95, math.sqrt(3.0)  # r = half the side
    y = y + 0.15  # centre the bounding box rather than the centroid
    x = x.abs() - r
    y = y + r / k
    flip = (x + k * y) > 0
    x, y = torch.where(flip, (x - k * y) / 2, x), torch.where(flip, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * r, 0)
    return -_length(x, y) * torch.sign(y)


def _sd_diamond(x, y):
    bx, by = 0.72, 0.98
    x, y = x.abs(), y.abs()
    h = (((bx - 2 * x) * bx - (by - 2 * y) * by) / (bx * bx + by * by)).clamp(-1, 1)
    d = _length(x - 0.5 * bx * (1 - h), y - 0.5 * by * (1 + h))
    return d * torch.sign(x * by + y * bx - bx * by)


def _sd_cross(x, y):
    return torch.minimum(_sd_box(x, y, 0.92, 0.3), _sd_box(x, y, 0.3, 0.92))


def _sd_ring(x, y):
    return (_length(x, y) - 0.68).abs() - 0.25


def _sd_star(x, y):
    r, rf = 1.0, 0.5
    k1x, k1y = 0.809016994375, -0.587785252292
    y = y + 0.08
    x = x.abs()
    d = (k1x * x + k1y * y).clamp(min=0)
    x, y = x - 2 * d * k1x, y - 2 * d * k1y
    d = (-k1x * x + k1y * y).clamp(min=0)
    x, y = x + 2 * d * k1x, y - 2 * d * k1y
    x = x.abs()
    y = y - r
    bax, bay = rf * -k1y, rf * k1x - 1
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0, r)
    return _length(x - bax * h, y - bay * h) * torch.sign(y * bax - x * bay)


def _sd_crescent(x, y):
    outer = _length(x + 0.12, y) - 0.88
    bite = _length(x - 0.42, y - 0.15) - 0.72
    return torch.maximum(outer, -bite)


def _sd_hexagon(x, y):
    kx, ky, kz = -0.866025404, 0.5, 0.577350269
    r = 0.82  # inradius
    x, y = x.abs(), y.abs()
    d = (kx * x + ky * y).clamp(max=0)
    x, y = x - 2 * d * kx, y - 2 * d * ky
    x = x - x.clamp(-kz * r, kz * r)
    y = y - r
    return _length(x, y) * torch.sign(y)


def _sd_heart(x, y):
    scale = 1.6
    x, y = x.abs() / scale, y / scale + 0.58
    upper = _length(x - 0.25, y - 0.75) - math.sqrt(2.0) / 4
    t = (x + y).clamp(min=0) * 0.5
    lower = torch.sqrt(torch.minimum(x * x + (y - 1) ** 2, (x - t) ** 2 + (y - t) ** 2)) \
        * torch.sign(x - y)
    return torch.where(x + y > 1, upper, lower) * scale


def _sd_aircraft(x, y):
    """An airliner seen from below, nose up: fuselage, swept wings, tailplane (the shear of the swept parts
    keeps the distance approximately, which is all the anti-aliasing needs)."""
    fuselage = _sd_box(x, y, 0.1, 0.88) - 0.04
    wings = _sd_box(x, y - 0.12 + 0.42 * x.abs(), 0.95, 0.11)
    tail = _sd_box(x, y + 0.72 + 0.3 * x.abs(), 0.36, 0.07)
    return torch.minimum(fuselage, torch.minimum(wings, tail))


#: Silhouettes no concept has and no pretraining image shows (``paint(shapes=...)`` indexes
#: ``SHAPES + EXTRA_SHAPES``); synth-mtil's ``shades`` draws aircraft.
EXTRA_SHAPES: tuple[str, ...] = ("aircraft",)
_SDFS = (_sd_circle, _sd_square, _sd_triangle, _sd_diamond, _sd_cross,
         _sd_ring, _sd_star, _sd_crescent, _sd_hexagon, _sd_heart, _sd_aircraft)
assert len(_SDFS) == len(SHAPES) + len(EXTRA_SHAPES)


# Per-domain rendering style (order of ALL_DOMAINS).
@dataclass(frozen=True)
class _Style:
    outline_px: float  # outline width drawn just outside the shape (0 = none)
    ink: float  # outline grey level (ignored when the ink is coloured)
    edge_px: float  # anti-aliasing / blur width of the silhouette
    shading: float  # amplitude of the directional shading on the shape
    noise: float  # std of per-pixel noise over the whole image
    desaturate: float  # how much the fill is pulled toward its grey
    background: str = ""  # background kind; "" = the domain's own name
    coloured_ink: float = 0.0  # 1: the outline glows in the object's colour instead of grey ink
    fill_gain: float = 1.0  # brightness of the fill (neon: a dim, hollow-looking interior)
    block_px: int = 1  # mosaic: average over blocks of this many pixels (a low-resolution capture)
    levels: int = 0  # mosaic: posterise every channel to this many levels (0 = off)
    haze: float = 0.0  # faded: mix of the whole image toward a flat grey
    distractors: int = 0  # clutter: up to this many smaller objects behind the main one
    scale: tuple[float, float] = (0.62, 0.8)  # size of the main object


_STYLES = (
    _Style(outline_px=0.0, ink=0.0, edge_px=1.0, shading=0.28, noise=0.035, desaturate=0.0),   # photo
    _Style(outline_px=0.0, ink=0.0, edge_px=2.2, shading=0.10, noise=0.012, desaturate=0.15),  # painting
    _Style(outline_px=1.3, ink=0.12, edge_px=1.0, shading=0.0, noise=0.012, desaturate=0.0),   # sketch
    _Style(outline_px=2.0, ink=0.02, edge_px=1.0, shading=0.0, noise=0.0, desaturate=0.0),     # cartoon
    # neon: a glowing coloured outline on a black ground, the interior dim
    _Style(outline_px=1.6, ink=0.0, edge_px=1.0, shading=0.0, noise=0.02, desaturate=0.0, background="night",
           coloured_ink=1.0, fill_gain=0.35),
    # mosaic: a low-resolution, posterised capture (2x2 blocks, 4 levels per channel)
    _Style(outline_px=0.0, ink=0.0, edge_px=1.0, shading=0.2, noise=0.02, desaturate=0.0, background="painting",
           block_px=2, levels=4),
    # clutter: a photo with smaller objects of other concepts behind the main one
    _Style(outline_px=0.0, ink=0.0, edge_px=1.0, shading=0.28, noise=0.035, desaturate=0.0, background="photo",
           distractors=4, scale=(0.5, 0.64)),
    # faded: washed-out colours under haze and sensor noise
    _Style(outline_px=0.0, ink=0.0, edge_px=1.6, shading=0.15, noise=0.07, desaturate=0.5, background="sketch",
           haze=0.35),
)
assert len(_STYLES) == len(ALL_DOMAINS)


def _style_column(field: str) -> torch.Tensor:
    return torch.tensor([float(getattr(st, field)) for st in _STYLES])


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _split_seed(*parts: object) -> int:
    """A stable 63-bit seed from arbitrary parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SyntheticWorld:
    """Renders images and captions of the 400 concepts; ``seed`` drives only image sampling."""

    def __init__(self, seed: int = 0, image_size: int = 32):
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.concepts: tuple[Concept, ...] = tuple(
            Concept(_concept_index(c, t, s), COLOURS[c], TEXTURES[t], SHAPES[s])
            for c in range(len(COLOURS)) for t in range(len(TEXTURES)) for s in range(len(SHAPES))
        )
        ids = torch.arange(len(self.concepts))
        self._colour_of = ids // (len(TEXTURES) * len(SHAPES))
        self._texture_of = ids // len(SHAPES) % len(TEXTURES)
        self._shape_of = ids % len(SHAPES)
        # Pixel-centre grid in [-1, 1], y up.
        xs = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
        self._gy, self._gx = torch.meshgrid(-xs, xs, indexing="ij")

    # ------------------------------------------------------------- concepts
    def benchmark_concepts(self) -> list[int]:
        """The 100 ``seq-synth`` classes in class order (task t = classes 10t..10t+9)."""
        return list(_benchmark_split())

    def pretrain_concepts(self) -> list[int]:
        """The 300 concepts disjoint from the benchmark, for contrastive pretraining."""
        bench = set(_benchmark_split())
        return [c.index for c in self.concepts if c.index not in bench]

    def caption(self, concept_id: int, domain: int, generator: torch.Generator | None = None,
                count: int = 1) -> str:
        """A caption such as "a sketch of a red striped circle."; with a generator the phrasing and the
        naming (:data:`NAMINGS`: which attributes the caption mentions) are random, as in alt-text,
        which rarely names everything. ``count`` > 1 describes that many copies ("two red circles")."""
        return self.caption_and_naming(concept_id, domain, generator, count)[0]

    def caption_and_naming(self, concept_id: int, domain: int, generator: torch.Generator | None = None,
                           count: int = 1) -> tuple[str, int]:
        """:meth:`caption` and the index into :data:`NAMINGS` it used (full naming without a generator)."""
        k = naming = 0
        if generator is not None:
            k = int(torch.randint(len(_CAPTION_PHRASES), (1,), generator=generator))
            naming = int(torch.multinomial(_NAMING_WEIGHTS, 1, generator=generator))
        return self._phrase(k, concept_id, domain, count, naming), naming

    def _phrase(self, phrase: int, concept_id: int, domain: int, count: int, naming: int) -> str:
        name = self.concept_name(concept_id, naming, plural=count > 1)
        article = NUMBERS[count - 1] if count > 1 else ("an" if name[0] in "aeiou" else "a")
        return _CAPTION_PHRASES[phrase].format(d=ALL_DOMAINS[int(domain)], n=name, a=article)

    def concept_name(self, concept_id: int, naming: int = 0, plural: bool = False) -> str:
        """The concept's name as ``NAMINGS[naming]`` says (full, without texture/colour, or the shape)."""
        c = self.concepts[int(concept_id)]
        shape = (c.shape + ("es" if c.shape.endswith("s") else "s")) if plural else c.shape
        mode = NAMINGS[naming]
        if mode == "full":
            return f"{c.texture} {c.colour} {shape}" if c.texture == "plain" else f"{c.colour} {c.texture} {shape}"
        if mode == "colour":
            return f"{c.colour} {shape}"
        if mode == "texture":
            return f"{c.texture} {shape}"
        return shape

    def caption_matches(self, naming: int, concept_a: torch.Tensor, concept_b: torch.Tensor) -> torch.Tensor:
        """Whether a caption naming concept ``a`` under ``naming`` is true of concept ``b`` (broadcasts)."""
        same_shape = self._shape_of[concept_a] == self._shape_of[concept_b]
        same_colour = self._colour_of[concept_a] == self._colour_of[concept_b]
        same_texture = self._texture_of[concept_a] == self._texture_of[concept_b]
        mode = NAMINGS[naming]
        if mode == "full":
            return same_shape & same_colour & same_texture
        if mode == "colour":
            return same_shape & same_colour
        if mode == "texture":
            return same_shape & same_texture
        return same_shape

    def pretraining_captions(self) -> list[str]:
        """Every distinct caption of micro-clip's pretraining corpus (the analogue of Conceptual
        Captions), in a fixed order: pretraining concepts x domains x phrasings x namings x counts."""
        out = []
        for cid in self.pretrain_concepts():
            for domain in range(len(DOMAINS)):
                for count in range(1, MAX_PRETRAIN_COUNT + 1):
                    for naming in range(len(NAMINGS)):
                        out.extend(self._phrase(k, cid, domain, count, naming) for k in range(len(_CAPTION_PHRASES)))
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------ rendering
    def render(self, concept_ids: torch.Tensor, generator: torch.Generator,
               domains: torch.Tensor | None = None) -> torch.Tensor:
        """Render one image per concept id as uint8 (N, 3, S, S); all randomness comes from ``generator``.

        ``domains`` index :data:`ALL_DOMAINS` (default: a random pretraining domain per image).
        """
        ids = torch.as_tensor(concept_ids, dtype=torch.long).reshape(-1)
        n, size = ids.numel(), self.image_size
        if domains is None:
            domains = torch.randint(len(DOMAINS), (n,), generator=generator)
        domains = torch.as_tensor(domains, dtype=torch.long).reshape(-1)
        if domains.numel() != n:
            raise ValueError("domains must have one entry per concept id")
        if n and (int(domains.min()) < 0 or int(domains.max()) >= len(ALL_DOMAINS)):
            raise ValueError(f"domains must index ALL_DOMAINS (0..{len(ALL_DOMAINS) - 1})")
        if n == 0:
            return torch.zeros(0, 3, size, size, dtype=torch.uint8)
        g = generator
        image = self.canvas(domains, g)
        # Clutter: smaller objects of random other concepts, drawn first so the main object occludes them.
        n_distract = _style_column("distractors").long()[domains]
        for k in range(int(n_distract.max())):
            sel = (n_distract > k).nonzero().squeeze(1)
            others = torch.randint(len(self.concepts), (sel.numel(),), generator=g)
            centre = _uniform(2 * sel.numel(), -0.62, 0.62, g).view(2, -1)
            image[sel] = self.paint(image[sel], others, domains[sel], g, scale=(0.2, 0.32), centre=centre)
        scale = torch.tensor([st.scale for st in _STYLES])[domains]
        image = self.paint(image, ids, domains, g, scale=scale)
        return self.finish(image, domains, g)

    def render_group(self, concept_ids: torch.Tensor, counts: torch.Tensor, generator: torch.Generator,
                     domains: torch.Tensor, scale=(0.2, 0.28)) -> torch.Tensor:
        """``counts[i]`` (1-9) copies of concept ``i`` in distinct cells of a 3x3 grid; uint8."""
        ids = torch.as_tensor(concept_ids, dtype=torch.long).reshape(-1)
        counts = torch.as_tensor(counts, dtype=torch.long).reshape(-1)
        domains = torch.as_tensor(domains, dtype=torch.long).reshape(-1)
        g, n = generator, ids.numel()
        cells = torch.argsort(torch.rand(n, 9, generator=g), dim=1)  # distinct grid cells per image
        grid = torch.tensor([-0.6, 0.0, 0.6])
        image = self.canvas(domains, g)
        for k in range(int(counts.max()) if n else 0):
            sel = (counts > k).nonzero().squeeze(1)
            cell = cells[sel, k]
            jitter = (torch.rand(2, sel.numel(), generator=g) - 0.5) * 0.16
            centre = torch.stack([grid[cell % 3], grid[cell // 3]]) + jitter
            image[sel] = self.paint(image[sel], ids[sel], domains[sel], g, scale=scale, centre=centre)
        return self.finish(image, domains, g)

    # The three stages of a rendering, public so that other synthetic datasets (synth-mtil) compose
    # their own scenes (several objects, custom colours and textures) in the same domains.
    def canvas(self, domains: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The domains' backgrounds, float (N, 3, S, S)."""
        return self._background(torch.as_tensor(domains, dtype=torch.long), g)

    def paint(self, image: torch.Tensor, ids: torch.Tensor, domains: torch.Tensor, g: torch.Generator,
              scale=(0.62, 0.8), centre: torch.Tensor | None = None, *, shapes: torch.Tensor | None = None,
              rgb: torch.Tensor | None = None, textures: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` with one object per row painted over it (returns a new tensor).

        The object is concept ``ids`` unless ``shapes`` (indices of ``SHAPES + EXTRA_SHAPES``), ``rgb`` ((N, 3) base
        colours) or ``textures`` (indices of ``ALL_TEXTURES``) override its attributes. ``scale`` is a
        ``(low, high)`` range, or per-row ``(N, 2)`` ranges, of the fraction of the half-image a shape
        unit spans; ``centre`` is ``(2, N)`` in [-1, 1] coordinates or ``None`` for a small jitter.
        """
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        domains = torch.as_tensor(domains, dtype=torch.long).reshape(-1)
        shapes = self._shape_of[ids] if shapes is None else torch.as_tensor(shapes, dtype=torch.long)
        rgb = _COLOUR_RGB[self._colour_of[ids]] if rgb is None else torch.as_tensor(rgb, dtype=torch.float32)
        textures = self._texture_of[ids] if textures is None else torch.as_tensor(textures, dtype=torch.long)
        n, size = ids.numel(), self.image_size
        theta = _uniform(n, -0.45, 0.45, g)
        low, high = torch.as_tensor(scale, dtype=torch.float32).reshape(-1, 2).expand(n, 2).unbind(1)
        s = torch.rand(n, generator=g) * (high - low) + low
        if centre is None:
            tx, ty = _uniform(n, -0.12, 0.12, g), _uniform(n, -0.12, 0.12, g)
        else:
            tx, ty = centre[0], centre[1]
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
        dx = self._gx - tx[:, None, None]
        dy = self._gy - ty[:, None, None]
        inv = (1 / s)[:, None, None]
        u = (cos * dx + sin * dy) * inv
        v = (cos * dy - sin * dx) * inv

        # Silhouette: signed distance in pixels.
        sdf = torch.empty(n, size, size)
        for k, fn in enumerate(_SDFS):
            sel = (shapes == k).nonzero().squeeze(1)
            if sel.numel():
                sdf[sel] = fn(u[sel], v[sel])
        sdf.mul_((s * (size / 2))[:, None, None])

        fill = self._fill(rgb, textures, dx, dy, u, v, domains, g)
        fill = fill * _style_column("fill_gain")[domains][:, None, None, None]
        outline, ink, edge = (_style_column(f)[domains][:, None, None] for f in ("outline_px", "ink", "edge_px"))
        coverage = (0.5 - (sdf - outline) / edge).clamp_(0, 1)
        ink_weight = (0.5 + sdf).clamp_(0, 1) * (outline > 0)
        coloured = _style_column("coloured_ink")[domains][:, None, None, None]
        ink_colour = coloured * (0.35 + 0.65 * rgb[:, :, None, None]) + (1 - coloured) * ink[:, None]
        layer = fill + ink_weight[:, None] * (ink_colour - fill)
        return image + coverage[:, None] * (layer - image)

    def finish(self, image: torch.Tensor, domains: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The capture: low resolution, haze, sensor noise and posterisation of the domain; uint8."""
        domains = torch.as_tensor(domains, dtype=torch.long).reshape(-1)
        block = _style_column("block_px").long()[domains]
        for b in block.unique().tolist():
            if b > 1:
                sel = (block == b).nonzero().squeeze(1)
                image[sel] = F.interpolate(F.avg_pool2d(image[sel], b), scale_factor=b, mode="nearest")
        haze = _style_column("haze")[domains][:, None, None, None]
        image = image + haze * (0.62 - image)
        image.add_(torch.randn(image.shape, generator=g) * _style_column("noise")[domains][:, None, None, None])
        levels = _style_column("levels").long()[domains]
        for q in levels.unique().tolist():
            if q > 1:
                sel = (levels == q).nonzero().squeeze(1)
                image[sel] = (image[sel].clamp(0, 1) * (q - 1)).round() / (q - 1)
        return image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)

    def _fill(self, rgb, textures, dx, dy, u, v, domains, g) -> torch.Tensor:
        """Coloured, textured, shaded interior of the shape, (N, 3, S, S) floats."""
        n, size = rgb.shape[0], self.image_size
        base = rgb * _uniform(n, 0.88, 1.06, g)[:, None]
        base = (base + _uniform(3 * n, -0.04, 0.04, g).view(n, 3)).clamp(0, 1)
        desat = _style_column("desaturate")[domains][:, None]
        base = base + desat * (base.mean(1, keepdim=True) - base)
        shade = 1 + _style_column("shading")[domains][:, None, None] * (
            u * _uniform(n, -0.7, 0.7, g)[:, None, None] + v * _uniform(n, 0.2, 0.7, g)[:, None, None])
        level = (_OFF_FACTOR + (1 - _OFF_FACTOR) * self.pattern(textures, dx, dy, g)) * shade
        return base[:, :, None, None] * level[:, None]

    def pattern(self, textures: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, g: torch.Generator
                ) -> torch.Tensor:
        """How "on" each pixel is, (N, S, S) in [0, 1], for texture indices into ``ALL_TEXTURES``, with a
        random orientation, period and phase per row; ``dx``/``dy`` are pixel-centre coordinates."""
        n, size = textures.numel(), self.image_size
        phi = _uniform(n, 0, math.pi, g)[:, None, None]
        period = (_uniform(n, 5.5, 8.0, g) * size / 32)[:, None, None]
        half = size / 2
        a = (dx * phi.cos() + dy * phi.sin()) * half / period + _uniform(n, 0, 1, g)[:, None, None]
        b = (dy * phi.cos() - dx * phi.sin()) * half / period + _uniform(n, 0, 1, g)[:, None, None]
        on = torch.ones(n, *dx.shape[1:])
        soft = period / (2 * math.pi)  # turns sin() into roughly a pixel distance -> ~1px AA
        for t, name in enumerate(ALL_TEXTURES):
            sel = (textures == t).nonzero().squeeze(1)
            if name == "plain" or not sel.numel():
                continue
            sa, sb, sp = a[sel], b[sel], soft[sel]
            if name == "striped":
                val = 0.5 + sp * torch.sin(2 * math.pi * sa)
            elif name == "checkered":
                val = 0.5 + 2 * sp * torch.sin(2 * math.pi * sa) * torch.sin(2 * math.pi * sb)
            elif name == "dotted":  # dark dots of radius 0.28 period on the coloured shape
                fa, fb = sa - sa.round(), sb - sb.round()
                val = 0.5 - (0.28 - _length(fa, fb)) * period[sel]
            elif name == "zigzag":  # stripes folded into a triangle wave
                tri = (sb / 2 - (sb / 2).round()).abs() * 2
                val = 0.5 + sp * torch.sin(2 * math.pi * (sa + tri))
            elif name == "grid":  # thin dark lines along both axes
                fa, fb = (sa - sa.round()).abs(), (sb - sb.round()).abs()
                val = ((torch.minimum(fa, fb) - 0.12) * period[sel]).clamp(0, 1)
            elif name == "wavy":
                val = 0.5 + sp * torch.sin(2 * math.pi * (sa + 0.35 * torch.sin(2 * math.pi * sb / 2)))
            else:  # speckled: a fine random salt pattern
                val = (torch.rand(sa.shape, generator=g) > 0.45).float()
            on[sel] = val.clamp_(0, 1)
        return on

    def _background(self, domains: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Low-saturation per-domain backgrounds, (N, 3, S, S) floats."""
        n, size = domains.numel(), self.image_size
        out = torch.empty(n, 3, size, size)
        kinds = [st.background or name for st, name in zip(_STYLES, ALL_DOMAINS)]
        for kind in dict.fromkeys(kinds):
            sel = torch.cat([(domains == d).nonzero().squeeze(1) for d, k in enumerate(kinds) if k == kind])
            sel = sel.sort().values
            m = sel.numel()
            if not m:
                continue
            tint = torch.randn(m, 3, 1, 1, generator=g) * 0.03
            if kind == "photo":  # dark, textured, unevenly lit
                level = _uniform(m, 0.08, 0.28, g)[:, None, None, None]
                blotches = F.interpolate(torch.randn(m, 1, 8, 8, generator=g), size=(size, size),
                                         mode="bilinear", align_corners=False)
                bg = level + tint + 0.06 * blotches
            elif kind == "painting":  # smooth blurry colour blobs, mid brightness
                level = _uniform(m, 0.35, 0.6, g)[:, None, None, None]
                blobs = torch.randn(m, 3, 4, 4, generator=g) * 0.12
                blobs = blobs - 0.6 * (blobs - blobs.mean(1, keepdim=True))  # keep saturation low
                bg = level + tint + F.interpolate(blobs, size=(size, size), mode="bicubic",
                                                  align_corners=False)
            elif kind == "sketch":  # plain light paper
                bg = _uniform(m, 0.82, 0.95, g)[:, None, None, None] + tint * 0.5
                bg = bg.expand(m, 3, size, size)
            elif kind == "night":  # neon: nearly black
                bg = (_uniform(m, 0.0, 0.06, g)[:, None, None, None] + tint * 0.3).expand(m, 3, size, size)
            else:  # cartoon: flat, darkish
                bg = _uniform(m, 0.2, 0.4, g)[:, None, None, None] + tint
                bg = bg.expand(m, 3, size, size)
            out[sel] = bg
        return out

    # --------------------------------------------------------------- splits
    def make_split(self, concept_ids: list[int], n_per_concept: int, split: str,
                   domains: tuple[str, ...] = DOMAINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, labels (position in ``concept_ids``) and domains (indices into ``ALL_DOMAINS``), sorted
        by label.

        Deterministic from (world seed, split, concept_ids, n_per_concept, domains); the given domains
        (default: the pretraining ones) cycle within each concept so every class is balanced over them.
        """
        concept_ids = [int(c) for c in concept_ids]
        unknown = [d for d in domains if d not in ALL_DOMAINS]
        if unknown or not domains:
            raise ValueError(f"unknown domains {unknown}: choose from {ALL_DOMAINS}")
        key = (self.seed, self.image_size, split, tuple(concept_ids), n_per_concept)
        if tuple(domains) != DOMAINS:  # the default keeps the pretraining seeds of earlier versions
            key = key + (tuple(domains),)
        return RENDERED.get(("make_split", *key), lambda: self._render_split(key, concept_ids, n_per_concept, domains))

    def _render_split(self, key: tuple, concept_ids: list[int], n_per_concept: int, domains: tuple[str, ...]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(_split_seed(*key))
        labels = torch.arange(len(concept_ids)).repeat_interleave(n_per_concept)
        cycle = torch.tensor([ALL_DOMAINS.index(d) for d in domains])
        domain_ids = cycle[torch.arange(n_per_concept).remainder(len(cycle))].repeat(len(concept_ids))
        ids = torch.tensor(concept_ids, dtype=torch.long)[labels]
        images = torch.empty(labels.numel(), 3, self.image_size, self.image_size, dtype=torch.uint8)
        for start in range(0, labels.numel(), _CHUNK):
            stop = start + _CHUNK
            images[start:stop] = self.render(ids[start:stop], generator, domain_ids[start:stop])
        return images, labels, domain_ids
