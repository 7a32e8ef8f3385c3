"""utils/optimizers.py: the multi-tensor update changes the cost, not the numbers."""
from __future__ import annotations

import pytest
import torch

from utils.optimizers import OPTIMIZER_CLASSES, OPTIMIZERS, make_optimizer


def trained(name: str, foreach: bool, steps: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((300, 16), (16,), (16, 16))]
    if foreach:
        opt = make_optimizer(name, params, 1e-2, momentum=0.9, weight_decay=0.1)
    else:
        kw = {"momentum": 0.9} if name == "sgd" else {}
        opt = OPTIMIZER_CLASSES[name](params, lr=1e-2, weight_decay=0.1, foreach=False, **kw)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (step + i) % 3 == 0 else torch.randn(p.shape, generator=g)   # some steps skip a tensor
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_multi_tensor_update_gives_the_single_tensor_numbers_bit_for_bit(name):
    assert all(torch.equal(a, b) for a, b in zip(trained(name, True), trained(name, False)))
    assert not torch.equal(trained(name, True, steps=1)[1], trained(name, True)[1])   # the steps did move them
    multi_tensor = None if name == "sgd" else True           # SGD keeps torch's default
    assert make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], 0.1).defaults["foreach"] is multi_tensor


def test_an_unknown_optimizer_names_the_valid_ones():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        make_optimizer("lamb", [torch.nn.Parameter(torch.zeros(2))], 0.1)
