"""One rank of the DDP tests (``tests/test_ddp.py``): ``torchrun --nproc_per_node 2 tests/ddp_worker.py RUNS``.

``RUNS`` is a JSON list of ``main.py`` argument lists, run one after the other in this process (the imports are
paid once); an argument ``@run:PATH`` is replaced by the one run directory under ``PATH`` (for ``--resume``), and
``["@gradients", FILE]`` writes to FILE (rank 0) how far one float64 step of small-cnn on two ranks is from the
same step on one process. Exits with the first non-zero exit code."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _resolve(arg: str) -> str:
    if not arg.startswith("@run:"):
        return arg
    runs = [p for p in Path(arg[5:]).glob("*/*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return str(runs[0])


def gradient_difference(path: str) -> None:
    """Relative max difference between the gradients of one global batch on one process and on the ranks
    (sharded, loss scaled, BatchNorm over the global batch, gradients averaged), in float64."""
    import copy

    import torch
    import torch.nn.functional as F

    from backbone.small_cnn import SmallCNN
    from utils import distributed

    distributed.setup("cpu")
    torch.manual_seed(0)
    net = SmallCNN(10).double()
    x, y = torch.randn(31, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (31,))
    whole = copy.deepcopy(net)
    F.cross_entropy(whole(x), y).backward()
    distributed.sync_batchnorm(net)
    shard = distributed.StepShard(len(distributed.shard(y)), len(y))
    (F.cross_entropy(net(distributed.shard(x)), distributed.shard(y)) * shard.loss_weight()).backward()
    distributed.average_gradients(list(net.parameters()))
    worst = max(float((p.grad - q.grad).abs().max() / q.grad.abs().max())
                for p, q in zip(net.parameters(), whole.parameters()))
    if distributed.is_main():
        Path(path).write_text(json.dumps({"relative_difference": worst}))


def run_all(runs: list[list[str]]) -> int:
    import main
    for args in runs:
        if args[0] == "@gradients":
            gradient_difference(args[1])
            continue
        code = main.main([_resolve(a) for a in args])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run_all(json.loads(sys.argv[1])))
