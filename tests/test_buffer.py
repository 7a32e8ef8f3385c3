import io
import math

import pytest
import torch

from utils.buffer import ClassBalancedBuffer, ReservoirBuffer
from utils.errors import UserError


def roundtrip(state):
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


def stream(n, start=0):
    idx = torch.arange(start, start + n)
    return dict(indexes=idx, labels=idx % 7, logits=torch.randn(n, 3, generator=torch.Generator().manual_seed(start)))


def sequential_reference(capacity, num_seen, slots, batch_ids, draws):
    """Plain algorithm R over one batch, consuming the documented draws one late item at a time."""
    slots = list(slots)
    c = 0
    for b, item in enumerate(batch_ids):
        i = num_seen + b
        if i < capacity:
            slots[i] = item
            continue
        j = math.floor(draws[c] * (i + 1))
        c += 1
        if j < capacity:
            slots[j] = item
    assert c == len(draws)
    return slots


# ------------------------------------------------------------------ reservoir

def test_reservoir_fills_first_items_in_order_and_counts():
    buf = ReservoirBuffer(10, seed=3)
    assert buf.is_empty() and len(buf) == 0
    buf.add(**stream(4))
    buf.add(**stream(4, 4))
    assert len(buf) == 8 and buf.num_seen == 8
    assert buf.get_all()["indexes"].tolist() == list(range(8))
    buf.add(**stream(5, 8))        # straddles the capacity
    assert len(buf) == 10 and buf.num_seen == 13
    kept = buf.get_all()["indexes"]
    # each slot holds its original item or one of the late items 10..12 (never a duplicate)
    assert all(v == slot or v >= 10 for slot, v in enumerate(kept.tolist())), kept
    assert kept.unique().numel() == 10 and int(kept.max()) <= 12
    for _ in range(20):
        buf.add(**stream(9, buf.num_seen))
        assert len(buf) == 10
    assert buf.num_seen == 13 + 180
    assert buf.get_all()["indexes"].unique().numel() == 10
    # columns stay aligned
    all_ = buf.get_all()
    assert torch.equal(all_["labels"], all_["indexes"] % 7)


def test_reservoir_matches_sequential_reference_with_collisions():
    # small capacity, big batches: many items of one batch hit the same slot
    capacity = 3
    buf = ReservoirBuffer(capacity, seed=11)
    ref = [None] * capacity
    total = 0
    collisions = 0
    for batch in [2, 40, 1, 57, 100]:
        g = torch.Generator()
        g.set_state(buf._insert_generator.get_state())
        late = batch - max(0, min(batch, capacity - buf.num_seen))
        draws = torch.rand(late, dtype=torch.float64, generator=g).tolist()
        js = [math.floor(u * (buf.num_seen + (batch - late) + t + 1)) for t, u in enumerate(draws)]
        hits = [j for j in js if j < capacity]
        collisions += len(hits) - len(set(hits))
        ids = list(range(total, total + batch))
        ref = sequential_reference(capacity, buf.num_seen, ref, ids, draws)
        buf.add(indexes=torch.tensor(ids))
        total += batch
        assert buf.get_all()["indexes"].tolist() == ref[: len(buf)]
    assert collisions > 0, "the test must exercise same-slot collisions"


def test_reservoir_later_item_wins_constructed_case():
    # capacity 2, late items at positions 2 and 3: pick a seed whose two draws land in the same slot.
    for seed in range(200):
        buf = ReservoirBuffer(2, seed=seed)
        buf.add(indexes=torch.tensor([0, 1]))
        g = torch.Generator()
        g.set_state(buf._insert_generator.get_state())
        u = torch.rand(2, dtype=torch.float64, generator=g).tolist()
        j2, j3 = math.floor(u[0] * 3), math.floor(u[1] * 4)
        if j2 == j3 < 2:
            break
    else:
        pytest.fail("no colliding seed found")
    buf.add(indexes=torch.tensor([10, 11]))
    expected = [0, 1]
    expected[j2] = 11                      # the later item (position 3) wins the slot
    assert buf.get_all()["indexes"].tolist() == expected


def test_reservoir_inclusion_probability():
    capacity, n, reps = 10, 60, 2000
    counts = torch.zeros(n)
    for seed in range(reps):
        buf = ReservoirBuffer(capacity, seed=seed)
        for start in range(0, n, 16):
            buf.add(indexes=torch.arange(start, min(n, start + 16)))
        counts[buf.get_all()["indexes"]] += 1
    p = capacity / n
    std = math.sqrt(reps * p * (1 - p))
    assert counts.sum() == reps * capacity
    assert (counts - reps * p).abs().max() < 5 * std, counts
    # late items are kept as often as early ones (a naive "never replace" or "always replace" fails)
    assert abs(counts[:30].mean() - counts[30:].mean()) < 5 * std / math.sqrt(30) * math.sqrt(2)


def test_reservoir_sample_distinct_and_seeded():
    buf = ReservoirBuffer(50, seed=1)
    buf.add(**stream(200))
    s = buf.sample(30)
    assert s["indexes"].unique().numel() == 30
    assert torch.equal(s["labels"], s["indexes"] % 7)
    assert buf.sample(500)["indexes"].numel() == 50
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(buf.sample(20, g1)["indexes"], buf.sample(20, g2)["indexes"])
    assert buf.sample(0)["indexes"].numel() == 0


def test_reservoir_sampling_does_not_change_contents():
    a, b = ReservoirBuffer(8, seed=2), ReservoirBuffer(8, seed=2)
    for start in range(0, 100, 10):
        a.add(**stream(10, start))
        b.add(**stream(10, start))
        a.sample(4)
    assert torch.equal(a.get_all()["indexes"], b.get_all()["indexes"])


def test_reservoir_state_roundtrip_identical_future():
    a = ReservoirBuffer(20, seed=4)
    for start in range(0, 70, 10):
        a.add(**stream(10, start))
    a.sample(5)
    state = roundtrip(a.state_dict())
    a.add(**stream(10, 999))          # state must be a copy, not a view of live storage
    b = ReservoirBuffer(20, seed=123)
    b.load_state_dict(state)
    a2 = ReservoirBuffer(20, seed=4)
    a2.load_state_dict(state)
    for buf in (b, a2):
        assert buf.num_seen == 70 and len(buf) == 20
    for start in range(70, 200, 13):
        a2.add(**stream(13, start))
        b.add(**stream(13, start))
    for k in ("indexes", "labels", "logits"):
        assert torch.equal(a2.get_all()[k], b.get_all()[k])
    assert torch.equal(a2.sample(7)["indexes"], b.sample(7)["indexes"])
    assert b.get_all()["logits"].dtype == torch.float32
    with pytest.raises(ValueError):
        ReservoirBuffer(21).load_state_dict(state)


def test_reservoir_empty_state_roundtrip_and_column_checks():
    a = ReservoirBuffer(5)
    b = ReservoirBuffer(5)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert b.is_empty() and b.get_all() == {}
    a.add(**stream(3))
    with pytest.raises(ValueError):
        a.add(indexes=torch.arange(3))                    # missing columns
    with pytest.raises(ValueError):
        a.add(indexes=torch.arange(3), labels=torch.arange(3), logits=torch.zeros(3, 4))
    with pytest.raises(ValueError):
        a.add(indexes=torch.arange(3), labels=torch.arange(2), logits=torch.zeros(2, 3))
    with pytest.raises(UserError):
        ReservoirBuffer(0)


# ------------------------------------------------------------------ class-balanced

def cand(classes, per, start=0):
    labels = torch.tensor(classes).repeat_interleave(per)
    idx = torch.arange(start, start + labels.numel())
    return dict(indexes=idx, labels=labels)


def by_class(buf):
    out = {}
    for i, y in zip(buf.get_all()["indexes"].tolist(), buf.get_all()["labels"].tolist()):
        out.setdefault(y, []).append(i)
    return out


def test_class_balanced_config_and_quota():
    with pytest.raises(UserError):
        ClassBalancedBuffer()
    with pytest.raises(UserError):
        ClassBalancedBuffer(buffer_size=10, per_class=2)
    with pytest.raises(UserError):
        ClassBalancedBuffer(per_class=0)
    fixed = ClassBalancedBuffer(buffer_size=100)
    assert [fixed.quota(n) for n in (1, 3, 7, 100, 101)] == [100, 33, 14, 1, 0]
    per = ClassBalancedBuffer(per_class=20)
    assert [per.quota(n) for n in (1, 50)] == [20, 20]


def test_class_balanced_shrink_keeps_priority_prefix():
    buf = ClassBalancedBuffer(buffer_size=12)
    c = cand([0, 1], 10)
    # priority: reverse order within each class
    ranking = torch.cat([torch.arange(9, -1, -1), torch.arange(19, 9, -1)])
    buf.update(c, ranking)
    assert by_class(buf) == {0: [9, 8, 7, 6, 5, 4], 1: [19, 18, 17, 16, 15, 14]}
    c2 = cand([2, 3], 10, start=100)
    buf.update(c2, torch.arange(20))
    assert by_class(buf) == {0: [9, 8, 7], 1: [19, 18, 17], 2: [100, 101, 102], 3: [110, 111, 112]}
    assert len(buf) == 12
    buf.update(cand([4], 10, start=200), torch.arange(10))   # 12 // 5 = 2
    assert by_class(buf) == {0: [9, 8], 1: [19, 18], 2: [100, 101], 3: [110, 111], 4: [200, 201]}
    assert buf.classes().tolist() == [0, 1, 2, 3, 4]
    # stored grouped by class
    assert buf.get_all()["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_class_balanced_reprioritise_reorders_old_classes_before_shrinking():
    buf = ClassBalancedBuffer(buffer_size=8)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    buf.update({"x": torch.arange(8), "labels": labels}, torch.arange(8))
    # a re-ranking by the current model: class 0 prefers its items 3, 1; class 1 prefers 6 and drops 4
    buf.reprioritise(torch.tensor([3, 1, 0, 2, 6, 5, 7]))
    assert buf.get_all()["x"].tolist() == [3, 1, 0, 2, 6, 5, 7] and len(buf) == 7
    buf.update({"x": torch.tensor([8, 9]), "labels": torch.tensor([2, 2])}, torch.tensor([0, 1]))
    assert buf.get_all()["x"].tolist() == [3, 1, 6, 5, 8, 9]              # quota 8 // 3 = 2: the new prefixes
    with pytest.raises(ValueError):
        buf.reprioritise(torch.tensor([2, 0]))                             # classes out of order
    with pytest.raises(ValueError):
        buf.reprioritise(torch.tensor([0, 0]))


def test_class_balanced_per_class_never_shrinks():
    buf = ClassBalancedBuffer(per_class=3)
    for t in range(5):
        buf.update(cand([2 * t, 2 * t + 1], 5, start=10 * t), torch.arange(10))
        assert len(buf) == 6 * (t + 1)
    assert by_class(buf)[0] == [0, 1, 2]
    assert by_class(buf)[9] == [45, 46, 47]


def test_class_balanced_interleaved_ranking_and_partial():
    buf = ClassBalancedBuffer(per_class=2)
    labels = torch.tensor([5, 3, 5, 3, 5, 3])
    c = dict(indexes=torch.arange(6), labels=labels)
    # interleaved classes: class 3 priority 5,1,3; class 5 priority 4,0 (item 2 never ranked)
    buf.update(c, torch.tensor([5, 4, 1, 0, 3]))
    assert by_class(buf) == {3: [5, 1], 5: [4, 0]}
    with pytest.raises(ValueError):
        buf.update(dict(indexes=torch.arange(2), labels=torch.tensor([3, 7])), torch.arange(2))
    with pytest.raises(ValueError):
        buf.update(dict(indexes=torch.arange(2), labels=torch.tensor([8, 7])), torch.tensor([0, 0]))


def test_class_balanced_quota_zero_keeps_class_seen():
    buf = ClassBalancedBuffer(buffer_size=2)
    buf.update(cand([0, 1, 2], 2), torch.arange(6))
    assert len(buf) == 0 and buf.classes().tolist() == [0, 1, 2]


def test_class_balanced_sample_and_state_roundtrip():
    buf = ClassBalancedBuffer(buffer_size=30, seed=9)
    c = cand([0, 1, 2], 20)
    c["logits"] = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    buf.update(c, torch.arange(60))
    s = buf.sample(25)
    assert s["indexes"].unique().numel() == 25
    state = roundtrip(buf.state_dict())
    other = ClassBalancedBuffer(buffer_size=30, seed=0)
    other.load_state_dict(state)
    assert torch.equal(other.classes(), buf.classes())
    assert torch.equal(other.sample(10)["indexes"], buf.sample(10)["indexes"])
    c2 = cand([3, 4], 20, start=60)
    c2["logits"] = torch.zeros(40, 4)
    for b in (buf, other):
        b.update(c2, torch.arange(40))
    for k in ("indexes", "labels", "logits"):
        assert torch.equal(other.get_all()[k], buf.get_all()[k])
    with pytest.raises(ValueError):
        ClassBalancedBuffer(per_class=30).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffers_on_cuda_match_cpu():
    cpu, gpu = ReservoirBuffer(16, "cpu", seed=1), ReservoirBuffer(16, "cuda", seed=1)
    for start in range(0, 100, 10):
        for b in (cpu, gpu):
            b.add(**stream(10, start))
    assert gpu.get_all()["indexes"].device.type == "cuda"
    assert torch.equal(cpu.get_all()["indexes"], gpu.get_all()["indexes"].cpu())
    assert gpu.sample(5)["indexes"].device.type == "cuda"
    g = torch.Generator("cuda").manual_seed(0)
    assert gpu.sample(5, g)["indexes"].unique().numel() == 5
    gpu.load_state_dict(roundtrip(gpu.state_dict()))
    cb = ClassBalancedBuffer(buffer_size=10, device="cuda")
    cb.update(cand([0, 1], 10), torch.arange(20))
    cb.update(cand([2], 10, start=20), torch.arange(10))
    assert cb.get_all()["indexes"].device.type == "cuda" and len(cb) == 9
