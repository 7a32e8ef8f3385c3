"""An embedded, procedurally generated vision-language world.

Images of compositional concepts (colour x texture x shape) are rendered in
memory from a seed, so the ``seq-synth`` benchmark and the tiny-CLIP
pretraining corpus need no files, no network and no licences.

Design
------
* A concept is ``(colour, texture, shape)``: 10 x 4 x 10 = 400 concepts.  Concept
  ``index = colour * 40 + texture * 10 + shape`` (indices into ``COLOURS``,
  ``TEXTURES``, ``SHAPES``), so ``SyntheticWorld.concepts`` has a fixed order.
* Names are three words, ``"<colour> <texture> <shape>"`` ("red striped
  circle"), except plain ones, which read ``"plain red circle"``.  Plain is
  spelled out so every name carries all three attributes (a text encoder must
  bind "plain" too).
* Domains (``photo``, ``painting``, ``sketch``, ``cartoon``) are nuisance
  variation: they change background, edges, outline, shading and noise but
  never the concept.  Backgrounds are low-saturation so they cannot be
  mistaken for a shape colour.
* Textures: "on" pixels get the concept colour, "off" pixels a much darker
  version of it.  Striped/checkered are half on / half off; dotted draws dark
  dots on the coloured shape so the colour stays dominant.
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

COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white",
)
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "cross", "ring", "star", "crescent", "hexagon", "heart",
)
DOMAINS: tuple[str, ...] = ("photo", "painting", "sketch", "cartoon")

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


_SDFS = (_sd_circle, _sd_square, _sd_triangle, _sd_diamond, _sd_cross,
         _sd_ring, _sd_star, _sd_crescent, _sd_hexagon, _sd_heart)
assert len(_SDFS) == len(SHAPES)


# Per-domain rendering style (order of DOMAINS).
@dataclass(frozen=True)
class _Style:
    outline_px: float  # outline width drawn just outside the shape (0 = none)
    ink: float  # outline grey level
    edge_px: float  # anti-aliasing / blur width of the silhouette
    shading: float  # amplitude of the directional shading on the shape
    noise: float  # std of per-pixel noise over the whole image
    desaturate: float  # how much the fill is pulled toward its grey


_STYLES = (
    _Style(outline_px=0.0, ink=0.0, edge_px=1.0, shading=0.28, noise=0.035, desaturate=0.0),   # photo
    _Style(outline_px=0.0, ink=0.0, edge_px=2.2, shading=0.10, noise=0.012, desaturate=0.15),  # painting
    _Style(outline_px=1.3, ink=0.12, edge_px=1.0, shading=0.0, noise=0.012, desaturate=0.0),   # sketch
    _Style(outline_px=2.0, ink=0.02, edge_px=1.0, shading=0.0, noise=0.0, desaturate=0.0),     # cartoon
)
assert len(_STYLES) == len(DOMAINS)


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

    def caption(self, concept_id: int, domain: int, generator: torch.Generator | None = None) -> str:
        """A caption such as "a sketch of a red striped circle."; phrasing random if a generator is given."""
        name = self.concepts[int(concept_id)].name
        k = 0 if generator is None else int(torch.randint(len(_CAPTION_PHRASES), (1,), generator=generator))
        article = "an" if name[0] in "aeiou" else "a"
        return _CAPTION_PHRASES[k].format(d=DOMAINS[int(domain)], n=name, a=article)

    # ------------------------------------------------------------ rendering
    def render(self, concept_ids: torch.Tensor, generator: torch.Generator,
               domains: torch.Tensor | None = None) -> torch.Tensor:
        """Render one image per concept id as uint8 (N, 3, S, S); all randomness comes from ``generator``."""
        ids = torch.as_tensor(concept_ids, dtype=torch.long).reshape(-1)
        n, size = ids.numel(), self.image_size
        if domains is None:
            domains = torch.randint(len(DOMAINS), (n,), generator=generator)
        domains = torch.as_tensor(domains, dtype=torch.long).reshape(-1)
        if domains.numel() != n:
            raise ValueError("domains must have one entry per concept id")
        if n == 0:
            return torch.zeros(0, 3, size, size, dtype=torch.uint8)
        g = generator

        # Pose: rotation, scale (fraction of the half-image a shape unit spans), translation.
        theta = _uniform(n, -0.45, 0.45, g)
        scale = _uniform(n, 0.62, 0.8, g)
        tx, ty = _uniform(n, -0.12, 0.12, g), _uniform(n, -0.12, 0.12, g)
        cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
        dx = self._gx - tx[:, None, None]
        dy = self._gy - ty[:, None, None]
        inv = (1 / scale)[:, None, None]
        u = (cos * dx + sin * dy) * inv
        v = (cos * dy - sin * dx) * inv

        # Silhouette: signed distance in pixels.
        shapes = self._shape_of[ids]
        sdf = torch.empty(n, size, size)
        for s, fn in enumerate(_SDFS):
            sel = (shapes == s).nonzero().squeeze(1)
            if sel.numel():
                sdf[sel] = fn(u[sel], v[sel])
        px_per_unit = scale * (size / 2)
        sdf.mul_(px_per_unit[:, None, None])

        fill = self._fill(ids, dx, dy, u, v, domains, g)
        background = self._background(domains, g)

        style = [torch.tensor([getattr(st, f) for st in _STYLES]) for f in
                 ("outline_px", "ink", "edge_px", "noise")]
        outline, ink, edge, noise = (t[domains][:, None, None] for t in style)
        silhouette = (0.5 - (sdf - outline) / edge).clamp_(0, 1)
        ink_weight = (0.5 + sdf).clamp_(0, 1) * (outline > 0)
        content = fill + ink_weight[:, None] * (ink[:, None] - fill)
        image = background + silhouette[:, None] * (content - background)
        image.add_(torch.randn(image.shape, generator=g) * noise[:, None])
        return image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)

    def _fill(self, ids, dx, dy, u, v, domains, g) -> torch.Tensor:
        """Coloured, textured, shaded interior of the shape, (N, 3, S, S) floats."""
        n, size = ids.numel(), self.image_size
        base = _COLOUR_RGB[self._colour_of[ids]] * _uniform(n, 0.88, 1.06, g)[:, None]
        base = (base + _uniform(3 * n, -0.04, 0.04, g).view(n, 3)).clamp(0, 1)
        desat = torch.tensor([st.desaturate for st in _STYLES])[domains][:, None]
        base = base + desat * (base.mean(1, keepdim=True) - base)

        # Texture coordinates in pixels, with their own orientation, period and phase.
        phi = _uniform(n, 0, math.pi, g)[:, None, None]
        period = (_uniform(n, 5.5, 8.0, g) * size / 32)[:, None, None]
        half = size / 2
        a = (dx * phi.cos() + dy * phi.sin()) * half / period + _uniform(n, 0, 1, g)[:, None, None]
        b = (dy * phi.cos() - dx * phi.sin()) * half / period + _uniform(n, 0, 1, g)[:, None, None]
        on = torch.ones(n, size, size)
        textures = self._texture_of[ids]
        soft = period / (2 * math.pi)  # turns sin() into roughly a pixel distance -> ~1px AA
        for t, name in enumerate(TEXTURES):
            sel = (textures == t).nonzero().squeeze(1)
            if name == "plain" or not sel.numel():
                continue
            sa, sb, sp = a[sel], b[sel], soft[sel]
            if name == "striped":
                val = 0.5 + sp * torch.sin(2 * math.pi * sa)
            elif name == "checkered":
                val = 0.5 + 2 * sp * torch.sin(2 * math.pi * sa) * torch.sin(2 * math.pi * sb)
            else:  # dotted: dark dots of radius 0.28 period on the coloured shape
                fa, fb = sa - sa.round(), sb - sb.round()
                val = 0.5 - (0.28 - _length(fa, fb)) * period[sel]
            on[sel] = val.clamp_(0, 1)
        shade = 1 + torch.tensor([st.shading for st in _STYLES])[domains][:, None, None] * (
            u * _uniform(n, -0.7, 0.7, g)[:, None, None] + v * _uniform(n, 0.2, 0.7, g)[:, None, None])
        level = (_OFF_FACTOR + (1 - _OFF_FACTOR) * on) * shade
        return base[:, :, None, None] * level[:, None]

    def _background(self, domains: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Low-saturation per-domain backgrounds, (N, 3, S, S) floats."""
        n, size = domains.numel(), self.image_size
        out = torch.empty(n, 3, size, size)
        for d, name in enumerate(DOMAINS):
            sel = (domains == d).nonzero().squeeze(1)
            m = sel.numel()
            if not m:
                continue
            tint = torch.randn(m, 3, 1, 1, generator=g) * 0.03
            if name == "photo":  # dark, textured, unevenly lit
                level = _uniform(m, 0.08, 0.28, g)[:, None, None, None]
                blotches = F.interpolate(torch.randn(m, 1, 8, 8, generator=g), size=(size, size),
                                         mode="bilinear", align_corners=False)
                bg = level + tint + 0.06 * blotches
            elif name == "painting":  # smooth blurry colour blobs, mid brightness
                level = _uniform(m, 0.35, 0.6, g)[:, None, None, None]
                blobs = torch.randn(m, 3, 4, 4, generator=g) * 0.12
                blobs = blobs - 0.6 * (blobs - blobs.mean(1, keepdim=True))  # keep saturation low
                bg = level + tint + F.interpolate(blobs, size=(size, size), mode="bicubic",
                                                  align_corners=False)
            elif name == "sketch":  # plain light paper
                bg = _uniform(m, 0.82, 0.95, g)[:, None, None, None] + tint * 0.5
                bg = bg.expand(m, 3, size, size)
            else:  # cartoon: flat, darkish
                bg = _uniform(m, 0.2, 0.4, g)[:, None, None, None] + tint
                bg = bg.expand(m, 3, size, size)
            out[sel] = bg
        return out

    # --------------------------------------------------------------- splits
    def make_split(self, concept_ids: list[int], n_per_concept: int, split: str
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, labels (position in ``concept_ids``) and domains, sorted by label.

        Deterministic from (world seed, split, concept_ids, n_per_concept); domains
        cycle photo/painting/sketch/cartoon within each concept so every class is
        balanced over domains.
        """
        concept_ids = [int(c) for c in concept_ids]
        generator = torch.Generator().manual_seed(
            _split_seed(self.seed, self.image_size, split, tuple(concept_ids), n_per_concept))
        labels = torch.arange(len(concept_ids)).repeat_interleave(n_per_concept)
        domains = torch.arange(n_per_concept).remainder(len(DOMAINS)).repeat(len(concept_ids))
        ids = torch.tensor(concept_ids, dtype=torch.long)[labels]
        images = torch.empty(labels.numel(), 3, self.image_size, self.image_size, dtype=torch.uint8)
        for start in range(0, labels.numel(), _CHUNK):
            stop = start + _CHUNK
            images[start:stop] = self.render(ids[start:stop], generator, domains[start:stop])
        return images, labels, domains
