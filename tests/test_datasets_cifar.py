"""CIFAR loaders on tiny fakes in the native python-pickle layout; download/verification errors."""
import tarfile
from dataclasses import replace

import pytest
import torch

from datasets import get_dataset_class
from fakes.cifar import CIFAR100_NAMES, write_cifar10, write_cifar100
from utils.errors import UserError
from utils.run_options import RunOptions


def args(root, **kw):
    return replace(RunOptions(), data_path=str(root), download=False, **kw)


@pytest.mark.parametrize("n_tasks", [10, 20, 50])
def test_cifar100_tasks_order_and_names(tmp_path, n_tasks):
    write_cifar100(tmp_path)
    cls = get_dataset_class("seq-cifar100")
    with pytest.warns(UserWarning, match="checksum"):
        ds = cls(args(tmp_path, verify_data=False, class_order="seed1993"), cls.Options(cifar100_tasks=n_tasks))
    assert ds.N_TASKS == n_tasks and ds.n_classes == 100
    assert ds.class_order[:4].tolist() == [68, 56, 78, 8]                   # the iCaRL order
    assert ds.class_names[0] == CIFAR100_NAMES[68].replace("_", " ")
    images, labels = ds.split("train")
    assert images.shape == (300, 3, 32, 32) and images.dtype == torch.uint8
    # the fake writes the native label into the first byte of each image
    assert torch.equal(torch.as_tensor(ds.class_order)[labels], images[:, 0, 0, 0].long())
    lo, hi = ds.get_offsets(1)
    assert hi - lo == 100 // n_tasks
    test = ds.task_data(1, "test")
    assert len(test) == 2 * (hi - lo) and int(test.labels.min()) == lo


def test_cifar10(tmp_path):
    write_cifar10(tmp_path)
    with pytest.warns(UserWarning):
        ds = get_dataset_class("seq-cifar10")(args(tmp_path, verify_data=False))
    assert ds.N_TASKS == 5 and ds.class_names[:2] == ["airplane", "automobile"]
    assert len(ds.task_data(0, "train")) == 6 and len(ds.task_data(4, "test")) == 4


def test_checksum_mismatch_is_an_error_by_default(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(UserError, match="checksum .* does not match.*--verify_data 0"):
        get_dataset_class("seq-cifar100")(args(tmp_path))


def test_missing_folder_names_path_and_source(tmp_path):
    with pytest.raises(UserError, match=r"cifar-100-python is missing.*cifar-100-python.tar.gz"):
        get_dataset_class("seq-cifar100")(args(tmp_path))


def test_corrupted_archive(tmp_path):
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not really a tarball")
    with pytest.raises(UserError, match="does not match its checksum|corrupt"):
        get_dataset_class("seq-cifar100")(args(tmp_path))
    with pytest.raises(UserError, match="not a tar or zip archive|corrupt"):
        with pytest.warns(UserWarning):
            get_dataset_class("seq-cifar100")(args(tmp_path, verify_data=False))


def test_archive_members_cannot_escape(tmp_path):
    from datasets.utils.download import extract
    evil = tmp_path / "evil.tar"
    (tmp_path / "payload").write_text("x")
    with tarfile.open(evil, "w") as tf:
        tf.add(tmp_path / "payload", arcname="../escaped.txt")
    with pytest.raises(UserError, match="outside"):
        extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_zip_members_cannot_escape(tmp_path):
    import zipfile
    from datasets.utils.download import extract
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(UserError, match="outside"):
        extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_failed_extraction_leaves_nothing_behind(tmp_path):
    import io
    from datasets.utils.download import extract
    good = tmp_path / "data.tar"
    with tarfile.open(good, "w") as tf:
        for i in range(20):
            payload = bytes(4096)
            info = tarfile.TarInfo(f"dataset/file_{i}.bin")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[:40000])
    with pytest.raises(UserError, match="corrupt"):
        extract(truncated, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []           # no half-written dataset/ folder
    extract(good, tmp_path / "out")
    assert len(list((tmp_path / "out" / "dataset").iterdir())) == 20
