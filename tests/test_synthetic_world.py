"""Tests of the embedded synthetic vision-language world (datasets/utils/synthetic_world.py)."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from datasets.utils.split_memo import RENDERED
from datasets.utils.synthetic_world import (
    ALL_DOMAINS, COLOURS, DOMAINS, NAMINGS, SHAPES, TEMPLATES, TEXTURES, UNSEEN_DOMAINS, Concept, SyntheticWorld,
)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(seed=0)


def concept_id(world, colour, texture, shape):
    (match,) = [c.index for c in world.concepts
                if (c.colour, c.texture, c.shape) == (colour, texture, shape)]
    return match


def linear_probe_accuracy(train_x, train_y, test_x, test_y, ridge=100.0):
    """Test accuracy of a closed-form ridge-regression classifier on standardised features.

    Closed form rather than SGD: milliseconds, deterministic, and immune to CPU contention.
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-3
    train_x = F.pad((train_x - mean) / std, (0, 1), value=1.0)  # bias column
    test_x = F.pad((test_x - mean) / std, (0, 1), value=1.0)
    targets = F.one_hot(train_y).float()
    gram = train_x.T @ train_x + ridge * torch.eye(train_x.shape[1])
    weights = torch.linalg.solve(gram, train_x.T @ targets)
    return ((test_x @ weights).argmax(1) == test_y).float().mean().item()


def pooled_pixels(images):
    return F.avg_pool2d(images.float() / 255, 2).flatten(1)


def radial_spectrum(images):
    """Translation- and rotation-invariant texture features: per-frequency-ring mean and peakiness."""
    grey = images.float().mean(1) / 255
    power = torch.fft.fft2(grey - grey.mean((1, 2), keepdim=True)).abs().flatten(1)
    size = images.shape[-1]
    freq = torch.fft.fftfreq(size) * size
    ring = (freq[:, None] ** 2 + freq[None, :] ** 2).sqrt().round().long().flatten().clamp(max=size // 2)
    rings = range(size // 2 + 1)
    mean = torch.stack([power[:, ring == k].mean(1) for k in rings], 1)
    peak = torch.stack([power[:, ring == k].max(1).values for k in rings], 1)
    return torch.cat([mean.log1p(), (peak / (mean + 1e-3)).log1p()], 1)


def probe(world, ids, features, n_train=100, n_test=50):
    x_train, y_train, _ = world.make_split(ids, n_train, "train")
    x_test, y_test, _ = world.make_split(ids, n_test, "test")
    return linear_probe_accuracy(features(x_train), y_train, features(x_test), y_test)


# ----------------------------------------------------------------- concepts

def test_vocabulary_sizes():
    assert (len(COLOURS), len(TEXTURES), len(SHAPES), len(DOMAINS)) == (10, 4, 10, 4)
    assert 5 <= len(TEMPLATES) <= 8
    assert all(t.count("{}") == 1 for t in TEMPLATES)


def test_concepts_fixed_order_and_unique_names(world):
    assert len(world.concepts) == 400
    assert [c.index for c in world.concepts] == list(range(400))
    assert len({c.name for c in world.concepts}) == 400
    assert len({(c.colour, c.texture, c.shape) for c in world.concepts}) == 400
    assert world.concepts[0] == Concept(0, "red", "plain", "circle")
    assert world.concepts[0].name == "plain red circle"
    assert world.concepts[concept_id(world, "red", "striped", "circle")].name == "red striped circle"


def test_benchmark_and_pretrain_split(world):
    bench, pre = world.benchmark_concepts(), world.pretrain_concepts()
    assert len(bench) == len(set(bench)) == 100
    assert len(pre) == len(set(pre)) == 300
    assert not set(bench) & set(pre)
    assert set(bench) | set(pre) == set(range(400))
    # Same benchmark whatever the world seed or image size.
    assert SyntheticWorld(seed=123, image_size=16).benchmark_concepts() == bench
    # Pinned: changing the benchmark silently would invalidate every stored result.
    assert bench[:10] == [231, 12, 66, 52, 258, 391, 184, 395, 189, 98]


def test_split_attribute_coverage(world):
    bench = [world.concepts[i] for i in world.benchmark_concepts()]
    pre = [world.concepts[i] for i in world.pretrain_concepts()]
    for attr, values in (("colour", COLOURS), ("texture", TEXTURES), ("shape", SHAPES)):
        pre_counts = Counter(getattr(c, attr) for c in pre)
        assert min(pre_counts[v] for v in values) >= 3, attr
        assert len({getattr(c, attr) for c in bench}) == len(values), attr
    # Every attribute pair of a benchmark class was seen during pretraining.
    for a, b in (("colour", "shape"), ("colour", "texture"), ("texture", "shape")):
        seen = {(getattr(c, a), getattr(c, b)) for c in pre}
        assert all((getattr(c, a), getattr(c, b)) in seen for c in bench), (a, b)
    # Benchmark classes are not separable by colour and shape alone.
    assert len({(c.colour, c.shape) for c in bench}) < 100


def test_captions(world):
    cid = concept_id(world, "red", "striped", "circle")
    assert world.caption(cid, DOMAINS.index("sketch")) == "a sketch of a red striped circle."
    assert world.caption(concept_id(world, "orange", "dotted", "star"), 0).startswith("a photo of an orange")
    captions = {world.caption(cid, 1, torch.Generator().manual_seed(i)) for i in range(40)}
    assert len(captions) >= 3
    # Captions name a random subset of the attributes, but always the shape, and never a wrong attribute.
    assert all("circle" in c and not any(w in c for w in ("blue", "dotted", "plain")) for c in captions)
    assert any("red striped circle" in c for c in captions) and any("red striped" not in c for c in captions)
    assert world.caption(cid, 0, count=3) == "a photo of three red striped circles."
    cross = concept_id(world, "blue", "plain", "cross")
    assert world.caption(cross, 0, count=2) == "a photo of two plain blue crosses."
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [world.caption(cid, 2, g1) for _ in range(5)] == [world.caption(cid, 2, g2) for _ in range(5)]


def test_caption_matches_is_what_a_caption_says(world):
    a = torch.tensor(concept_id(world, "red", "striped", "circle"))
    b = torch.tensor(concept_id(world, "red", "dotted", "circle"))
    full, colour, texture, shape = range(len(NAMINGS))
    assert not world.caption_matches(full, a, b) and world.caption_matches(full, a, a)
    assert world.caption_matches(colour, a, b) and not world.caption_matches(texture, a, b)
    assert world.caption_matches(shape, a, b)


def test_pretraining_captions_never_name_a_benchmark_concept(world):
    captions = world.pretraining_captions()
    assert len(captions) == len(set(captions)) > 10_000
    bench_names = {world.concept_name(i) for i in world.benchmark_concepts()}
    assert not any(name in caption for caption in captions for name in bench_names
                   if f"{name}." in caption or f"{name} " in caption)
    assert captions == SyntheticWorld(seed=3).pretraining_captions()  # the world seed moves images only


# ---------------------------------------------------------------- rendering

def test_render_shapes_and_dtype(world):
    ids = torch.arange(0, 400, 7)
    images = world.render(ids, torch.Generator().manual_seed(0))
    assert images.dtype == torch.uint8 and images.shape == (len(ids), 3, 32, 32)
    assert images.float().std() > 30  # not blank
    big = SyntheticWorld(image_size=64).render(ids[:4], torch.Generator().manual_seed(0),
                                               torch.tensor([0, 1, 2, 3]))
    assert big.shape == (4, 3, 64, 64)
    assert world.render(torch.tensor([], dtype=torch.long), torch.Generator()).shape == (0, 3, 32, 32)


def test_render_deterministic_given_generator(world):
    ids = torch.arange(40)
    a = world.render(ids, torch.Generator().manual_seed(1))
    b = SyntheticWorld(seed=0).render(ids, torch.Generator().manual_seed(1))
    c = world.render(ids, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_make_split_shapes_and_balance(world):
    ids = world.benchmark_concepts()[:5]
    images, labels, domains = world.make_split(ids, 12, "train")
    assert images.shape == (60, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and domains.dtype == torch.int64
    assert labels.tolist() == sorted(labels.tolist())
    assert torch.bincount(labels).tolist() == [12] * 5
    assert torch.bincount(domains).tolist() == [15] * 4


def test_make_split_determinism(world):
    ids = world.benchmark_concepts()[:3]
    train = world.make_split(ids, 8, "train")
    RENDERED.clear()                                   # rendered again, not handed out by the memo
    again = SyntheticWorld(seed=0).make_split(ids, 8, "train")
    assert all(torch.equal(x, y) for x, y in zip(train, again))
    assert not torch.equal(train[0], world.make_split(ids, 8, "test")[0])
    assert not torch.equal(train[0], SyntheticWorld(seed=1).make_split(ids, 8, "train")[0])
    # No duplicated images inside a split.
    assert len({img.numpy().tobytes() for img in train[0]}) == len(train[0])


def test_domains_differ_but_keep_the_concept(world):
    cid = concept_id(world, "green", "checkered", "square")
    n = 64
    ids = torch.full((n * len(DOMAINS),), cid)
    domains = torch.arange(len(DOMAINS)).repeat_interleave(n)
    images = world.render(ids, torch.Generator().manual_seed(0), domains).float() / 255
    # Backgrounds (image border) are distinct per domain: sketch paper is light, photo dark.
    border = torch.cat([images[..., 0, :], images[..., -1, :]], -1).mean((1, 2)).view(len(DOMAINS), n)
    means = border.mean(1)
    assert means[DOMAINS.index("sketch")] > means[DOMAINS.index("painting")] > means[DOMAINS.index("photo")]
    assert means[DOMAINS.index("cartoon")] > means[DOMAINS.index("photo")]
    per_domain = images.view(len(DOMAINS), n, -1).mean(1)
    assert torch.cdist(per_domain, per_domain).add(torch.eye(len(DOMAINS)) * 1e3).min() > 1.0
    # ... while the shape colour dominates the centre in every domain (green > red, blue).
    centre = images[..., 12:20, 12:20].mean((2, 3)).view(len(DOMAINS), n, 3).mean(1)
    assert (centre[:, 1] > centre[:, 0] + 0.15).all() and (centre[:, 1] > centre[:, 2] + 0.15).all()


def test_make_split_cycles_the_given_domains(world):
    ids = world.benchmark_concepts()[:3]
    images, _, domains = world.make_split(ids, 16, "test", domains=ALL_DOMAINS)
    assert torch.bincount(domains, minlength=len(ALL_DOMAINS)).tolist() == [6] * len(ALL_DOMAINS)
    seen_only = world.make_split(ids, 16, "test")
    assert set(seen_only[2].tolist()) == set(range(len(DOMAINS)))
    assert not torch.equal(images, seen_only[0])
    with pytest.raises(ValueError, match="unknown domains"):
        world.make_split(ids, 4, "test", domains=("underwater",))


def test_mosaic_is_a_low_resolution_capture(world):
    ids = torch.full((32,), concept_id(world, "green", "plain", "square"))
    mosaic = world.render(ids, torch.Generator().manual_seed(0), torch.full_like(ids, ALL_DOMAINS.index("mosaic")))
    photo = world.render(ids, torch.Generator().manual_seed(0), torch.full_like(ids, ALL_DOMAINS.index("photo")))
    same = lambda x: (x[..., 0::2, :] == x[..., 1::2, :]).float().mean()   # rows equal within 2x2 blocks
    assert same(mosaic) > 0.85 and same(photo) < 0.2  # measured 0.92 and 0.03 (noise after the blocks)


def test_every_domain_is_recognisable(world):
    """The four unseen styles are real shifts: a linear probe on pixels tells all eight domains apart."""
    ids = world.benchmark_concepts()[:10]
    x_train, _, d_train = world.make_split(ids, 48, "train", domains=ALL_DOMAINS)
    x_test, _, d_test = world.make_split(ids, 24, "test", domains=ALL_DOMAINS)
    acc = linear_probe_accuracy(pooled_pixels(x_train), d_train, pooled_pixels(x_test), d_test)
    assert acc > 0.4  # chance 0.125


def test_domain_is_recognisable(world):
    """Domains are real nuisance variation: a linear probe can tell them apart."""
    ids = world.benchmark_concepts()[:10]
    x_train, _, d_train = world.make_split(ids, 40, "train")
    x_test, _, d_test = world.make_split(ids, 20, "test")
    acc = linear_probe_accuracy(pooled_pixels(x_train), d_train, pooled_pixels(x_test), d_test)
    assert acc > 0.5  # chance 0.25; measured ~0.75


# ------------------------------------------------------------ learnability

def test_first_benchmark_task_is_learnable(world):
    acc = probe(world, world.benchmark_concepts()[:10], pooled_pixels)
    assert acc > 0.7  # chance 0.1; measured ~0.95


def test_shapes_are_learnable(world):
    """Same colour and texture, 10 shapes: only the silhouette tells them apart."""
    ids = [concept_id(world, "red", "plain", s) for s in SHAPES]
    acc = probe(world, ids, pooled_pixels)
    assert acc > 0.55  # chance 0.1; measured ~0.80


def test_textures_are_learnable(world):
    """Same colour and shape, 4 textures: only the pattern tells them apart."""
    ids = [concept_id(world, "blue", t, "circle") for t in TEXTURES]
    acc = probe(world, ids, radial_spectrum)
    assert acc > 0.6  # chance 0.25; measured ~0.90
