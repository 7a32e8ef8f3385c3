"""MNIST loader on a tiny fake in torchvision's gzipped idx-ubyte layout; its errors."""
import gzip
from dataclasses import replace

import pytest
import torch

from datasets import get_dataset_class
from fakes.mnist import write_mnist
from utils.errors import UserError
from utils.run_options import RunOptions


def args(root, **kw):
    return replace(RunOptions(), data_path=str(root), download=False, **kw)


def test_seq_mnist_tasks_names_and_labels(tmp_path):
    write_mnist(tmp_path)
    with pytest.warns(UserWarning, match="checksum"):
        ds = get_dataset_class("seq-mnist")(args(tmp_path, verify_data=False, class_order="random", seed=3))
    assert ds.N_TASKS == 5 and ds.n_classes == 10 and ds.get_offsets(4) == (8, 10)
    assert sorted(ds.class_names) == [str(d) for d in range(10)]
    assert ds.task_templates(0) == ('a photo of the number: "{}".',)
    images, labels = ds.split("train")
    assert images.shape == (30, 3, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 2])                             # grey expanded to RGB
    # pixel [0, 0] holds the native label, i.e. the digit: names follow labels after reordering
    assert [ds.class_names[int(y)] for y in labels] == [str(int(v)) for v in images[:, 0, 0, 0]]
    test = ds.task_data(2, "test")
    assert len(test) == 4 and set(test.labels.tolist()) == {4, 5}
    batch = next(iter(ds.task_data(0, "train").batches(4, train=True)))
    assert batch["inputs"].shape == (4, 3, 28, 28)


def test_missing_files_name_path_and_mirror(tmp_path):
    with pytest.raises(UserError, match=r"MNIST/raw/train-images-idx3-ubyte.gz' is missing.*ossci-datasets"):
        get_dataset_class("seq-mnist")(args(tmp_path))


def test_checksum_mismatch_is_an_error_by_default(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(UserError, match="checksum .* does not match.*--verify_data 0"):
        get_dataset_class("seq-mnist")(args(tmp_path))


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b"\0\0\x08\x03" + b"\0\0\0\x05" * 3)],
                         ids=["not-gzip", "truncated"])
def test_corrupt_or_truncated_idx_file(tmp_path, content):
    folder = write_mnist(tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.warns(UserWarning):
        ds = get_dataset_class("seq-mnist")(args(tmp_path, verify_data=False))
    with pytest.raises(UserError, match="corrupt|truncated"):
        ds.split("test")
