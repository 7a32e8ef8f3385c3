"""``seq-vtab``: ADAM's VTAB ImageFolder trees on a tiny fake: 5 domain tasks of 10 classes, CLAP4CLIP's
names by ImageFolder index, class orders that keep domains apart, a DataLoader batch, the archive's
unpacking, and its errors."""
import zipfile
from dataclasses import replace

import pytest
import torch

from datasets import get_dataset_class
from fakes.image_tree import label_of, label_of_tensor
from fakes.vtab import write_vtab
from utils.errors import UserError
from utils.run_options import RunOptions


def vtab(root, **kw):
    return get_dataset_class("seq-vtab")(replace(RunOptions(), data_path=str(root), download=False, num_workers=0,
                                                 **kw))


def test_seq_vtab_domains_names_and_a_batch(tmp_path):
    write_vtab(tmp_path, per_split=1)
    ds = vtab(tmp_path)
    assert (ds.N_TASKS, ds.classes_per_task) == (5, [10] * 5)
    # one domain per task: RESISC45, DTD, Oxford Pets, EuroSAT, Flowers-102 (CLAP4CLIP's names)
    assert [ds.class_names[lo] for lo in range(0, 50, 10)] == [
        "airplane", "banded texture", "Abyssinian pet", "annual crop land", "mexican petunia flower"]
    assert ds.class_names[22] == "staffordshire bull terrier pet" and ds.class_names[49] == "pink-yellow dahlia flower"
    assert ds.task_templates(3) == ("a photo of a {}.", "a photo of the {}.")
    images, labels = ds.split("test")
    assert [label_of(images.image(i)) for i in range(len(images))] == labels.tolist() == list(range(50))
    batch = next(iter(ds.task_data(3, "train").batches(4, shuffle=True, generator=torch.Generator().manual_seed(0),
                                                       train=True)))
    assert batch["inputs"].shape == (4, 3, 224, 224)
    assert all(30 <= label < 40 for label in batch["labels"].tolist())
    assert [label_of_tensor(x) for x in batch["not_aug_inputs"]] == batch["labels"].tolist()


def test_random_class_order_keeps_each_domain_in_its_task(tmp_path):
    write_vtab(tmp_path)
    ds = vtab(tmp_path, class_order="random", seed=4)
    order = ds.class_order.tolist()
    assert order != list(range(50))
    assert all(sorted(order[lo:lo + 10]) == list(range(lo, lo + 10)) for lo in range(0, 50, 10))
    images, labels = ds.split("train")
    for i in range(len(images)):                     # the run label names the class the image's colour encodes
        assert ds.class_names[int(labels[i])] == ds.source.native_class_names()[label_of(images.image(i))]


def test_archive_is_unpacked_to_vtab_wherever_its_trees_are(tmp_path):
    tree = write_vtab(tmp_path / "src", folder="vtab-cil/vtab")          # e.g. a zip holding vtab-cil/vtab/{train,test}
    with zipfile.ZipFile(tmp_path / "vtab.zip", "w") as zf:
        for path in sorted(tree.parent.rglob("*")):
            zf.write(path, path.relative_to(tree.parent.parent).as_posix())
    ds = vtab(tmp_path)                              # no published checksum: nothing to verify, nothing to warn
    assert (tmp_path / "vtab" / "train" / "07").is_dir() and not (tmp_path / ".vtab-extract").exists()
    assert len(ds.task_data([0, 1, 2, 3, 4], "test")) == 50


def test_errors(tmp_path):
    with pytest.raises(UserError, match=r"vtab/train is missing.*--download 0.*sharepoint.com.*vtab.zip") as info:
        vtab(tmp_path)
    assert "\n" not in str(info.value)
    write_vtab(tmp_path)
    (tmp_path / "vtab" / "test" / "49").rename(tmp_path / "vtab" / "test" / "x")
    with pytest.raises(UserError, match="train and .*test have different class folders"):
        vtab(tmp_path)
    for split in ("train", "test"):                  # 49 classes in both
        folder = tmp_path / "vtab" / split / ("x" if split == "test" else "49")
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    with pytest.raises(UserError, match="49 class folders, expected the 50"):
        vtab(tmp_path)
    (tmp_path / "vtab.zip").write_bytes(b"not a zip")
    (tmp_path / "vtab" / "test").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"vtab is incomplete .*delete it to extract .*vtab.zip again"):
        vtab(tmp_path)
    (tmp_path / "vtab").rename(tmp_path / "elsewhere2")
    with pytest.raises(UserError, match="not a tar or zip archive"):
        vtab(tmp_path)
