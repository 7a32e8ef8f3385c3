import math

import pytest
import torch

from utils.errors import UserError
from utils.exemplar_selection import SELECTORS, rank_exemplars


def per_class(ranking, labels):
    """{class: [candidate indices in priority order]}; also checks the grouping contract."""
    lab = labels[ranking].tolist()
    assert lab == sorted(lab), "ranking must be grouped by ascending class"
    out = {}
    for i, y in zip(ranking.tolist(), lab):
        out.setdefault(y, []).append(i)
    return out


def herding_reference(features, k):
    """Plain iCaRL herding for one class (loops, float64, direct norm)."""
    f = features.double()
    f = f / f.norm(dim=1, keepdim=True)
    mu = f.mean(0)
    chosen, total = [], torch.zeros_like(mu)
    for s in range(k):
        best, best_cost = None, math.inf
        for i in range(f.shape[0]):
            if i in chosen:
                continue
            cost = (mu - (total + f[i]) / (s + 1)).norm().item()
            if cost < best_cost:
                best, best_cost = i, cost
        chosen.append(best)
        total = total + f[best]
    return chosen


# ------------------------------------------------------------------ herding

def test_herding_matches_reference():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 0, 1, 2, 0] * 8 + [1, 1, 1])      # interleaved, unequal class sizes
    feats = torch.randn(labels.numel(), 6, generator=g) * torch.rand(labels.numel(), 1, generator=g) * 5
    ranking = rank_exemplars("herding", labels, features=feats)
    got = per_class(ranking, labels)
    assert sorted(ranking.tolist()) == list(range(labels.numel()))   # no repeats, all ranked
    for c in (0, 1, 2):
        idx = torch.nonzero(labels == c).squeeze(1)
        ref = herding_reference(feats[idx], idx.numel())
        assert got[c] == idx[ref].tolist()
    # k stops early; the result is the prefix
    short = per_class(rank_exemplars("herding", labels, features=feats, k=3), labels)
    assert short == {c: got[c][:3] for c in got}


def test_herding_is_not_trivial_order():
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(30, dtype=torch.long)
    feats = torch.randn(30, 4, generator=g)
    r = rank_exemplars("herding", labels, features=feats, k=5)
    assert r.tolist() != list(range(5))


# ------------------------------------------------------------------ uncertainty selectors

def logits_from_probs(p):
    return torch.log(torch.tensor(p, dtype=torch.float32))


def test_entropy_direction():
    labels = torch.tensor([0, 0, 0])
    logits = logits_from_probs([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    assert rank_exemplars("entropy", labels, logits=logits).tolist() == [1, 2, 0]
    assert rank_exemplars("entropy", labels, logits=logits, keep="low").tolist() == [0, 2, 1]
    assert rank_exemplars("entropy", labels, logits=logits, keep="high").tolist() == [1, 2, 0]


def test_energy_direction():
    labels = torch.tensor([1, 1, 1])
    logits = torch.tensor([[5.0, 0.0], [0.0, 0.0], [2.0, 1.0]])   # logsumexp: ~5.0, 0.69, 2.3
    assert rank_exemplars("energy", labels, logits=logits).tolist() == [1, 2, 0]
    assert rank_exemplars("energy", labels, logits=logits, keep="low").tolist() == [0, 2, 1]


def test_distance_direction_uses_true_class():
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[3.0, 9.0], [9.0, 1.0], [-1.0, 9.0], [0.0, 4.0]])
    # true-class logits: 3, 1, -1, 4 -> keep low by default
    r = rank_exemplars("distance", labels, logits=logits)
    assert per_class(r, labels) == {0: [2, 0], 1: [1, 3]}
    r = rank_exemplars("distance", labels, logits=logits, keep="high")
    assert per_class(r, labels) == {0: [0, 2], 1: [3, 1]}


def mc_case():
    """Image 0: samples agree (confident); image 1: samples disagree (high variance); image 2: flat."""
    conf = [[0.9, 0.05, 0.05]] * 2
    flip = [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]
    flat = [[1 / 3, 1 / 3, 1 / 3]] * 2
    p = torch.tensor([conf, flip, flat]).permute(1, 0, 2)        # (T=2, N=3, C=3)
    return torch.log(p)


def test_variance_direction_and_needs_mc():
    labels = torch.zeros(3, dtype=torch.long)
    mc = mc_case()
    # variance: image 1 high, images 0 and 2 zero (tie -> candidate order). Default keeps LOW.
    assert rank_exemplars("variance", labels, mc_logits=mc).tolist() == [0, 2, 1]
    assert rank_exemplars("variance", labels, mc_logits=mc, keep="high").tolist() == [1, 0, 2]
    with pytest.raises(UserError, match="T >= 2"):
        rank_exemplars("variance", labels, logits=mc[0])
    with pytest.raises(UserError, match="T=1"):
        rank_exemplars("variance", labels, mc_logits=mc[:1])


def test_var_entropy_positive_no_nan():
    labels = torch.zeros(3, dtype=torch.long)
    mc = mc_case()
    # image 1: variance > 0 and entropy > 0; images 0/2 have zero variance -> score 0
    r = rank_exemplars("var_entropy", labels, mc_logits=mc)
    assert r.tolist() == [1, 0, 2]
    assert rank_exemplars("var_entropy", labels, mc_logits=mc, keep="low").tolist()[-1] == 1
    # extreme logits (one-hot softmax, zeros) must not give NaN: ranking still sorts by score
    g = torch.Generator().manual_seed(0)
    extreme = torch.randn(4, 50, 10, generator=g) * 200
    lab = torch.randint(0, 3, (50,), generator=g)
    from utils.exemplar_selection import _score
    s = _score("var_entropy", lab, None, extreme)
    assert not torch.isnan(s).any() and (s >= 0).all()
    assert s.max() > 0


def test_mc_statistics_are_per_image():
    # Image 0: both samples say class 0 (confident). Image 1: both samples say class 1.
    # Mixing samples across images (CLAP4CLIP's reshape) would make both look uncertain.
    p = torch.tensor([
        [[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]],     # t = 0: images 0, 1
        [[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]],     # t = 1
    ])
    conf = torch.log(p)
    unsure = torch.log(torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.4, 0.3]])).unsqueeze(1)  # image 2
    mc = torch.cat([conf, unsure], dim=1)         # (T=2, N=3, C=3)
    labels = torch.zeros(3, dtype=torch.long)
    # entropy of the per-image mean: image 2 most uncertain, images 0 and 1 equal
    assert rank_exemplars("entropy", labels, mc_logits=mc).tolist()[0] == 2
    # variance per image: image 2 has variance (two different samples); 0 and 1 have none
    assert rank_exemplars("variance", labels, mc_logits=mc).tolist() == [0, 1, 2]
    # Reading the same (T, N, C) data as (N, T, C) (the cross-image mixing) gives a different
    # answer, so this test discriminates.
    mixed = mc.reshape(3, 2, 3).permute(1, 0, 2)  # what a (N, T, C) reshape of (T, N, C) data means
    assert rank_exemplars("variance", labels, mc_logits=mixed).tolist() != [0, 1, 2]


def test_mc_logits_preferred_over_logits():
    labels = torch.zeros(2, dtype=torch.long)
    logits = torch.tensor([[0.0, 0.0], [9.0, 0.0]])            # image 0 uncertain
    mc = torch.tensor([[[9.0, 0.0], [0.0, 0.0]]] * 2)          # image 1 uncertain
    assert rank_exemplars("entropy", labels, logits=logits).tolist() == [0, 1]
    assert rank_exemplars("entropy", labels, logits=logits, mc_logits=mc).tolist() == [1, 0]


def test_energy_mean_over_samples():
    labels = torch.zeros(2, dtype=torch.long)
    # image 0: samples [10, 0] and [0, 10]: mean_t logsumexp ~ 10 (the logsumexp of the mean logits
    # would be only ~5.7); image 1: [7, 7] twice: logsumexp 7.69 -> image 1 has the higher energy.
    mc = torch.tensor([[[10.0, 0.0], [7.0, 7.0]], [[0.0, 10.0], [7.0, 7.0]]])
    assert rank_exemplars("energy", labels, mc_logits=mc).tolist() == [1, 0]


def test_entropy_is_of_the_softmax_of_the_mean_logits():
    """CLAP4CLIP's entropy selector scores softmax(model(x, test=True)), i.e. of the Monte-Carlo mean logits."""
    labels = torch.zeros(2, dtype=torch.long)
    # image 0: samples [6, 0, 0] and [0, 0, 0]; image 1: [1.9, 0, 0] twice
    mc = torch.tensor([[[6.0, 0.0, 0.0], [1.9, 0.0, 0.0]], [[0.0, 0.0, 0.0], [1.9, 0.0, 0.0]]])
    h_of_mean_logits = torch.special.entr(mc.mean(0).softmax(-1)).sum(-1)      # 0.51, 0.70
    h_of_mean_probs = torch.special.entr(mc.softmax(-1).mean(0)).sum(-1)       # 0.85, 0.70
    assert h_of_mean_logits[0] < h_of_mean_logits[1] and h_of_mean_probs[0] > h_of_mean_probs[1]
    assert rank_exemplars("entropy", labels, mc_logits=mc).tolist() == [1, 0]            # most uncertain first
    # with a deterministic model the mean logits are the logits
    assert rank_exemplars("entropy", labels, logits=mc.mean(0)).tolist() == [1, 0]


def test_herding_on_logits_is_herding_on_the_normalised_mean_logits():
    """CLAP4CLIP's icarl selector herds the L2-normalised model(x, test=True) outputs: MC-mean logits."""
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0] * 12 + [1] * 9)
    mc = torch.randn(5, 21, 7, generator=gen)
    features = torch.randn(21, 16, generator=gen)
    on_logits = rank_exemplars("herding", labels, features=features, mc_logits=mc, k=4, herding_on="logits")
    assert torch.equal(on_logits, rank_exemplars("herding", labels, features=mc.mean(0), k=4))
    assert torch.equal(on_logits, rank_exemplars("herding", labels, logits=mc.mean(0), k=4, herding_on="logits"))
    assert per_class(on_logits, labels)[0] == herding_reference(mc.mean(0)[:12], 4)
    assert not torch.equal(on_logits, rank_exemplars("herding", labels, features=features, k=4))
    with pytest.raises(UserError):
        rank_exemplars("herding", labels, features=features, herding_on="logits")
    with pytest.raises(UserError):
        rank_exemplars("herding", labels, features=features, herding_on="pixels")


def test_var_entropy_nan_argsort_is_not_dataset_order():
    """The claim about CLAP4CLIP's var_entropy: numpy's argsort of its all-NaN scores is an arbitrary
    permutation once a class has more than 16 candidates, not the first k in dataset order."""
    np = pytest.importorskip("numpy")
    for n in (17, 500):
        order = np.argsort(np.full(n, np.nan))
        assert sorted(order.tolist()) == list(range(n)) and order.tolist() != list(range(n))
    assert np.argsort(np.full(16, np.nan)).tolist() == list(range(16))


def test_ties_are_stable():
    labels = torch.tensor([1, 0, 1, 0, 1])
    logits = torch.zeros(5, 3)
    for sel in ("entropy", "energy", "distance"):
        for keep in ("high", "low"):
            assert rank_exemplars(sel, labels, logits=logits, keep=keep).tolist() == [1, 3, 0, 2, 4]


# ------------------------------------------------------------------ random

def test_random_seeded_and_not_first_k():
    labels = torch.arange(200) % 4
    r = lambda s: rank_exemplars("random", labels, generator=torch.Generator().manual_seed(s))
    a, b, c = r(0), r(0), r(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    groups = per_class(a, labels)
    assert all(sorted(v) == list(range(cl, 200, 4)) for cl, v in groups.items())
    assert any(v[:5] != list(range(cl, 20, 4)) for cl, v in groups.items())   # not dataset order
    with pytest.raises(UserError, match="generator"):
        rank_exemplars("random", labels)


# ------------------------------------------------------------------ errors and contract

def test_unknown_selector_and_keep():
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(UserError, match="herding") as e:
        rank_exemplars("hearding", labels)
    assert "var_entropy" in str(e.value)
    with pytest.raises(UserError, match="keep"):
        rank_exemplars("entropy", labels, logits=torch.zeros(2, 2), keep="middle")
    with pytest.raises(UserError):
        rank_exemplars("herding", labels, features=torch.zeros(2, 2), keep="high")


@pytest.mark.parametrize("selector,needs", [("herding", "features"), ("entropy", "logits"),
                                            ("energy", "logits"), ("distance", "logits"),
                                            ("variance", "mc_logits"), ("var_entropy", "mc_logits")])
def test_missing_inputs(selector, needs):
    labels = torch.zeros(3, dtype=torch.long)
    with pytest.raises(UserError, match=needs):
        rank_exemplars(selector, labels)


@pytest.mark.parametrize("selector", SELECTORS)
def test_every_selector_returns_permutation_grouped_by_class(selector):
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (40,), generator=g)
    r = rank_exemplars(selector, labels, features=torch.randn(40, 8, generator=g),
                       mc_logits=torch.randn(3, 40, 5, generator=g), generator=g)
    assert r.dtype == torch.int64
    assert sorted(r.tolist()) == list(range(40))
    per_class(r, labels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (64,), generator=g)
    feats = torch.randn(64, 16, generator=g)
    mc = torch.randn(4, 64, 4, generator=g)
    for sel in ("herding", "entropy", "variance", "var_entropy", "energy", "distance"):
        cpu = rank_exemplars(sel, labels, features=feats, mc_logits=mc)
        gpu = rank_exemplars(sel, labels.cuda(), features=feats.cuda(), mc_logits=mc.cuda())
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu()), sel
    r = rank_exemplars("random", labels.cuda(), generator=torch.Generator("cuda").manual_seed(0))
    assert r.device.type == "cuda" and sorted(r.tolist()) == list(range(64))
