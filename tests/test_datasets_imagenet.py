"""TinyImageNet, ImageNet, ImageNet-100 and ImageNet-R loaders and the reference data, on tiny fakes in
their native layouts (see tests/fakes/imagenet_family.py); download, checksum and missing-data errors."""
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from datasets import get_dataset_class
from datasets.reference import conceptual_captions, imagenet_reference_images
from datasets.sources import get_source
from datasets.utils.imagenet import clip_imagenet_names, imagenet_r_names
from fakes.imagenet_family import (IMAGENET_R_WNIDS, IMAGENET_WNIDS, TINY_WNIDS, decode, mammoth_order, tiny_name,
                                   write_clap4clip_lists, write_imagenet, write_imagenet100_lists, write_imagenet_r,
                                   write_mammoth_lists, write_tinyimagenet, zip_folder)
from utils.errors import UserError
from utils.run_options import RunOptions

# fakes are subsets that fail count and checksum checks: --verify_data 0 warns, as it should
pytestmark = pytest.mark.filterwarnings("ignore:.*--verify_data 0:UserWarning")

CLIP = clip_imagenet_names()
R_NAMES = imagenet_r_names()
IMAGENET100_WNIDS = IMAGENET_WNIDS[3::10]                       # 100 classes, not the first ones
IMAGENET100_BY_LABEL = [IMAGENET100_WNIDS[i] for i in np.random.default_rng(5).permutation(100)]


def args(root, **kw):
    return replace(RunOptions(), data_path=str(root), download=False, num_workers=0, **kw)


def build(name, root, options=None, **kw):
    """The benchmark on fake (subset) data, with --verify_data 0 (its warnings are silenced: ``pytestmark``)."""
    return get_dataset_class(name)(args(root, verify_data=False, **kw), options)


def codes(ds, split):
    images, _ = ds.split(split)
    return [decode(images.image(i)) for i in range(len(images))]


def check_batch(ds, size):
    batch = next(iter(ds.task_data(1, "train").batches(4, train=True)))
    lo, hi = ds.get_offsets(1)
    assert batch["inputs"].shape == (min(4, len(ds.task_data(1, "train"))), 3, size, size)
    assert ((batch["labels"] >= lo) & (batch["labels"] < hi)).all()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tinyimagenet(root)
    return root


@pytest.fixture(scope="module")
def imagenet_r_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_r")
    folder = write_imagenet_r(root)
    write_clap4clip_lists(root, folder)
    write_mammoth_lists(root, folder)
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    folder = write_imagenet(root, IMAGENET100_WNIDS, per_class_train=2, per_class_val=1)
    write_imagenet100_lists(root, folder, IMAGENET100_BY_LABEL)
    return root


# ---- TinyImageNet ------------------------------------------------------------------------------
def test_tinyimagenet_equal_names_order_and_batches(tiny_root):
    ds = build("seq-tinyimagenet", tiny_root, class_order="seed1993")
    assert ds.N_TASKS == 10 and ds.n_classes == 200 and ds.get_offsets(9) == (180, 200)
    assert ds.class_order.tolist() == np.random.RandomState(1993).permutation(200).tolist()
    native = ds.source.native_class_names()
    assert ds.source.wnids == TINY_WNIDS != sorted(TINY_WNIDS)                 # wnids.txt order, as continuum
    assert native[:3] == ["Egyptian Mau", "fishing casting reel", "volleyball"]  # CLIP's names, as ZSCL prompts
    assert native == [CLIP[w] for w in TINY_WNIDS]
    for split in ("train", "test"):                                # images encode their native label
        _, labels = ds.split(split)
        assert codes(ds, split) == ds.class_order[labels.numpy()].tolist()
    assert ds.task_templates(0) == ("a bad photo of a {}.",)
    check_batch(ds, 64)


def test_tinyimagenet_zscl_order_and_sorted_native(tiny_root):
    cls = get_dataset_class("seq-tinyimagenet")
    zscl = build("seq-tinyimagenet", tiny_root, cls.Options(tinyimagenet_split="b100"), class_order="zscl")
    assert zscl.class_names[:4] == ["Persian cat", "stick insect", "goldfish", "kimono"]   # 131, 181, 22, 172
    _, labels = zscl.split("test")
    assert [zscl.class_names[y] for y in labels.tolist()] == [CLIP[TINY_WNIDS[c]] for c in codes(zscl, "test")]
    old = build("seq-tinyimagenet", tiny_root, cls.Options(tinyimagenet_native="sorted"))
    assert old.source.wnids == sorted(TINY_WNIDS)                  # Tusk's earlier order and words.txt names
    assert old.class_names[:2] == [tiny_name(TINY_WNIDS.index(w)) for w in sorted(TINY_WNIDS)[:2]]
    _, labels = old.split("test")
    assert [old.source.wnids[y] for y in labels.tolist()] == [TINY_WNIDS[c] for c in codes(old, "test")]
    with pytest.raises(UserError, match="class_order zscl indexes TinyImageNet's wnids.txt order"):
        build("seq-tinyimagenet", tiny_root, cls.Options(tinyimagenet_native="sorted"), class_order="zscl")


def test_tinyimagenet_wnids_order_is_verified(tiny_root, tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    folder.mkdir()
    for name in ("words.txt", "train", "val"):
        (folder / name).symlink_to(tiny_root / "tiny-imagenet-200" / name)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in sorted(TINY_WNIDS)))
    with pytest.raises(UserError, match=r"wnids.txt does not list the 200 classes in the order of tiny-imagenet-200"):
        get_dataset_class("seq-tinyimagenet")(args(tmp_path))
    ds = build("seq-tinyimagenet", tmp_path)                        # --verify_data 0: its own order
    assert ds.source.wnids == sorted(TINY_WNIDS)


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_tinyimagenet_b100_steps(tiny_root, steps):
    cls = get_dataset_class("seq-tinyimagenet")
    ds = build("seq-tinyimagenet", tiny_root, cls.Options(tinyimagenet_split="b100", tinyimagenet_steps=steps))
    assert ds.N_TASKS == 1 + steps and ds.get_offsets(0) == (0, 100)
    assert ds.get_offsets(1) == (100, 100 + 100 // steps) and ds.get_offsets(steps) == (200 - 100 // steps, 200)
    assert len(ds.task_data(0, "test")) == 100


def test_tinyimagenet_from_zip_checksum_and_corrupt_archive(tiny_root, tmp_path):
    # the zip of a subset (the val images, one training class): few folders keep the test fast
    zip_folder(tiny_root / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip",
               skip=lambda rel: "/train/" in rel and f"/{min(TINY_WNIDS)}/" not in rel)
    with pytest.raises(UserError, match=r"tiny-imagenet-200.zip is corrupt .*checksum md5:90528d7c"):
        get_dataset_class("seq-tinyimagenet")(args(tmp_path))
    with pytest.warns(UserWarning, match="checksum"):                 # a checksum mismatch only warns
        ds = build("seq-tinyimagenet", tmp_path)
    assert ds.source.folder == tmp_path / "tiny-imagenet-200" and not list(tmp_path.glob(".*extracting"))
    assert len(ds.task_data(0, "test")) == 20 and ds.source.native_class_names()[0] == CLIP[TINY_WNIDS[0]]

    shutil.rmtree(tmp_path / "tiny-imagenet-200")
    (tmp_path / "tiny-imagenet-200.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a tar or zip archive|corrupt"):
        build("seq-tinyimagenet", tmp_path)
    assert not (tmp_path / "tiny-imagenet-200").exists() and not list(tmp_path.glob(".*extracting"))


def test_tinyimagenet_missing_and_incomplete(tmp_path, tiny_root):
    with pytest.raises(UserError, match=r"tiny-imagenet-200' is missing.*cs231n.stanford.edu/tiny-imagenet-200.zip"):
        get_dataset_class("seq-tinyimagenet")(args(tmp_path))
    folder = tmp_path / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "train").mkdir()
    for name in ("wnids.txt", "words.txt"):
        shutil.copy(tiny_root / "tiny-imagenet-200" / name, folder / name)
    with pytest.raises(UserError, match="val_annotations.txt' is missing"):
        get_dataset_class("seq-tinyimagenet")(args(tmp_path))


def test_tinyimagenet_counts_are_verified(tiny_root):
    with pytest.raises(UserError, match=r"found 200, expected 100000.*--verify_data 0"):
        get_dataset_class("seq-tinyimagenet")(args(tiny_root)).split("train")


# ---- ImageNet-R --------------------------------------------------------------------------------
def names_line_up(ds, split, names=CLIP):
    """Each image's class (its code: an ILSVRC2012 index) has the name (``names[wnid]``) of its label."""
    _, labels = ds.split(split)
    return [names[IMAGENET_WNIDS[c]] for c in codes(ds, split)] == [ds.class_names[y] for y in labels.tolist()]


def test_imagenet_r_random_split(imagenet_r_root):
    ds = build("seq-imagenet-r", imagenet_r_root, class_order="random", seed=2)
    assert ds.SOURCE == "imagenet_r" and ds.N_TASKS == 10 and ds.n_classes == 200 and ds.get_offsets(1) == (20, 40)
    assert list(ds.source.native_class_names()) == [R_NAMES[w] for w in IMAGENET_R_WNIDS]
    assert sorted(ds.class_order.tolist()) == list(range(200)) and ds.class_order.tolist() != list(range(200))
    assert len(ds.split("train")[1]) == 200 and len(ds.split("test")[1]) == 200      # 2 per class: 1 / 1
    assert names_line_up(ds, "train", R_NAMES) and names_line_up(ds, "test", R_NAMES)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(ds.normalize(x), x)                          # mammoth's normalisation: none (0 / 1)
    train, test = set(ds.split("train")[0].paths), set(ds.split("test")[0].paths)
    assert not train & test
    assert len(ds.task_templates(0)) == 80
    check_batch(ds, 224)
    again = build("seq-imagenet-r", imagenet_r_root)
    assert set(again.split("test")[0].paths) == test                                 # the split is fixed


def test_imagenet_r_clap4clip_and_mammoth_lists(imagenet_r_root):
    cls = get_dataset_class("seq-imagenet-r")
    c4 = build("seq-imagenet-r", imagenet_r_root, cls.Options(imagenet_r_split="clap4clip"))
    assert c4.SOURCE == "imagenet_r_clap4clip" and c4.class_names == [R_NAMES[w] for w in IMAGENET_R_WNIDS]
    assert all("/imagenet-r/" in p for p in c4.split("train")[0].paths)
    assert names_line_up(c4, "train", R_NAMES) and names_line_up(c4, "test", R_NAMES)

    mm = build("seq-imagenet-r", imagenet_r_root, cls.Options(imagenet_r_split="mammoth"))
    assert mm.class_names == [R_NAMES[w] for w in mammoth_order()]                   # mammoth's label order
    assert names_line_up(mm, "train", R_NAMES) and names_line_up(mm, "test", R_NAMES)
    # the two fake lists swap train and test, as the real ones differ
    assert set(mm.split("test")[0].paths) == set(c4.split("train")[0].paths)


def test_imagenet_r_names_are_clap4clip_and_mammoths(imagenet_r_root):
    cls = get_dataset_class("seq-imagenet-r")
    ds = build("seq-imagenet-r", imagenet_r_root)
    by_wnid = dict(zip(IMAGENET_R_WNIDS, ds.class_names))
    assert by_wnid["n01494475"] == "hammerhead" and by_wnid["n01806143"] == "peacock"       # CLIP: hammerhead shark,
    assert by_wnid["n02110185"] == "husky" and by_wnid["n07697537"] == "hotdog"            # peafowl, Siberian Husky
    assert sum(by_wnid[w] != CLIP[w] for w in IMAGENET_R_WNIDS) == 47
    old = build("seq-imagenet-r", imagenet_r_root, cls.Options(imagenet_r_names="clip"))
    assert old.class_names == [CLIP[w] for w in IMAGENET_R_WNIDS]
    assert names_line_up(old, "test")


def test_imagenet_r_list_errors(imagenet_r_root, tmp_path):
    cls = get_dataset_class("seq-imagenet-r")
    with pytest.raises(UserError, match=r"imagenetr_train.txt is corrupt .*checksum"):
        cls(args(imagenet_r_root), cls.Options(imagenet_r_split="clap4clip"))
    # the lists are checked first: without them, nothing is downloaded
    with pytest.raises(UserError, match=r"imagenet_split/imagenetr_train.txt' is missing.*srvCodes/clap4clip"):
        cls(replace(args(tmp_path), download=True), cls.Options(imagenet_r_split="clap4clip"))
    with pytest.raises(UserError, match=r"imagenet-r_train.yaml' is missing.*aimagelab/mammoth"):
        cls(replace(args(tmp_path), download=True), cls.Options(imagenet_r_split="mammoth"))
    (tmp_path / "imagenet-r").symlink_to(imagenet_r_root / "imagenet-r")
    (tmp_path / "imagenet_split").mkdir()
    (tmp_path / "imagenet_split" / "imagenetr_train.txt").write_text("train/n01443537/nope.jpg 0\n")
    (tmp_path / "imagenet_split" / "imagenetr_test.txt").write_text("this line has no label\n")
    with pytest.raises(UserError, match="nope.jpg, listed in .* is missing"):
        build("seq-imagenet-r", tmp_path, cls.Options(imagenet_r_split="clap4clip"))


def test_imagenet_r_missing_folder_and_corrupt_archive(tmp_path):
    with pytest.raises(UserError, match=r"imagenet-r' is missing.*people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"):
        get_dataset_class("seq-imagenet-r")(args(tmp_path))
    (tmp_path / "imagenet-r.tar").write_bytes(b"\0" * 300)
    with pytest.raises(UserError, match="checksum md5:a6131213"):
        get_dataset_class("seq-imagenet-r")(args(tmp_path))


# ---- ImageNet and ImageNet-100 -----------------------------------------------------------------
def test_imagenet100_lists_and_seed1993_order(imagenet_root):
    ds = build("seq-imagenet100", imagenet_root, class_order="seed1993")
    assert ds.N_TASKS == 10 and ds.n_classes == 100 and ds.get_offsets(3) == (30, 40)
    assert ds.class_order[:4].tolist() == [68, 56, 78, 8]                           # the classic order
    assert list(ds.source.native_class_names()) == [CLIP[w] for w in IMAGENET100_BY_LABEL]
    assert len(ds.split("train")[1]) == 200 and len(ds.split("test")[1]) == 100
    assert names_line_up(ds, "train") and names_line_up(ds, "test")
    assert len(ds.task_templates(0)) == 80
    check_batch(ds, 224)


def test_imagenet100_missing_lists_and_folder(tmp_path, imagenet_root):
    with pytest.raises(UserError, match=r"imagenet/train' is missing.*image-net.org"):
        get_dataset_class("seq-imagenet100")(args(tmp_path))
    (tmp_path / "imagenet").symlink_to(imagenet_root / "imagenet")
    with pytest.raises(UserError, match=r"imagenet_split/\{train_100.txt,val_100.txt\}.*incremental_learning.pytorch"):
        get_dataset_class("seq-imagenet100")(args(tmp_path))


def test_imagenet_source_and_names_override(imagenet_root, tmp_path):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        source = get_source("imagenet")(imagenet_root, download=False, verify_data=False)
        images, labels = source.load_split("test")
    assert source.wnids == sorted(IMAGENET100_WNIDS)
    assert source.native_class_names()[:2] == [CLIP[w] for w in sorted(IMAGENET100_WNIDS)[:2]]
    assert [decode(images.image(i)) for i in range(len(images))] == \
        [IMAGENET_WNIDS.index(source.wnids[y]) for y in labels.tolist()]
    with pytest.raises(UserError, match="found 100, expected 1000"):
        get_source("imagenet")(imagenet_root, download=False, verify_data=True)

    write_imagenet(tmp_path, IMAGENET_WNIDS[:2], per_class_train=1, per_class_val=1)
    (tmp_path / "imagenet_classnames.txt").write_text(f"{IMAGENET_WNIDS[1]}\tgold_fish, Carassius auratus\n")
    with pytest.warns(UserWarning):
        source = get_source("imagenet")(tmp_path, download=False, verify_data=False)
    assert source.native_class_names() == ["tench", "gold fish"]


# ---- reference data ----------------------------------------------------------------------------
def test_imagenet_reference_images(imagenet_root, tmp_path):
    ref = imagenet_reference_images(imagenet_root, 50, seed=1)
    assert len(ref) == 50 and len(set(ref.paths)) == 50
    assert all("/imagenet/train/" in p for p in ref.paths)
    assert imagenet_reference_images(imagenet_root, 50, seed=1).paths == ref.paths
    assert imagenet_reference_images(imagenet_root / "imagenet", 50, seed=1).paths == ref.paths
    assert imagenet_reference_images(imagenet_root, 50, seed=2).paths != ref.paths
    assert ref.image(0).size == (8, 8)
    with pytest.raises(UserError, match="asked for 201, but .* has 200"):
        imagenet_reference_images(imagenet_root, 201)
    with pytest.raises(UserError, match=r"imagenet/train' is missing.*image-net.org"):
        imagenet_reference_images(tmp_path, 5)


def test_conceptual_captions(tmp_path):
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text("a dog runs on the beach\thttp://x/1.jpg\n\nred car parked outside\thttp://x/2.jpg\n"
                   "a cup of coffee\thttp://x/3.jpg\n")
    assert conceptual_captions(tsv) == ["a dog runs on the beach", "red car parked outside", "a cup of coffee"]
    two = conceptual_captions(tsv, n=2, seed=4)
    assert len(set(two)) == 2 and two == conceptual_captions(tsv, n=2, seed=4)
    plain = tmp_path / "captions.txt"
    plain.write_text("one caption\nanother caption\n")
    assert conceptual_captions(plain) == ["one caption", "another caption"]
    with pytest.raises(UserError, match="asked for 3, but .* has 2"):
        conceptual_captions(plain, n=3)
    with pytest.raises(UserError, match=r"missing.tsv' is missing.*ConceptualCaptions"):
        conceptual_captions(tmp_path / "missing.tsv")
