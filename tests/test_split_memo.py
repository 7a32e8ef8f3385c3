"""The in-process memo of rendered synthetic splits: the same tensors as a fresh render, never shared."""
import torch

from datasets.utils.split_memo import RENDERED, SplitMemo
from datasets.utils.synthetic_world import DOMAINS, SyntheticWorld


def test_a_memoised_split_equals_a_fresh_render_and_is_a_copy():
    world = SyntheticWorld(seed=3)
    concepts = world.benchmark_concepts()[:3]
    RENDERED.clear()
    first = world.make_split(concepts, 4, "test")
    first[0].zero_()                                   # a run that writes into its images...
    again = world.make_split(concepts, 4, "test")
    fresh = world._render_split((3, 32, "test", tuple(concepts), 4), concepts, 4, DOMAINS)
    assert again[0].abs().sum() > 0                    # ...does not reach the next run
    for a, b in zip(again, fresh):
        assert torch.equal(a, b)


def test_the_memo_keeps_the_most_recent_splits_within_its_bytes():
    memo, calls = SplitMemo(max_bytes=2 * 400), []

    def make(k):
        calls.append(k)
        return (torch.full((100,), k, dtype=torch.int32),)          # 400 bytes
    for k in (1, 2, 1, 3, 1, 2):
        assert torch.equal(memo.get(k, lambda k=k: make(k))[0], torch.full((100,), k, dtype=torch.int32))
    assert calls == [1, 2, 3, 2]                       # 2 went out when 3 came in (1 was used more recently)
    assert memo.nbytes() <= 800
    assert memo.get("big", lambda: (torch.zeros(1000),))[0].shape == (1000,) and "big" not in memo._items
