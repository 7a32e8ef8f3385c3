"""MTIL: its own raw datasets (FGVC-Aircraft, Caltech-101, Food-101, SUN397) on tiny fakes in their native
layouts, and the whole 11-task ``mtil`` benchmark in orders I and II on the fakes of every source."""
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from datasets.sources import get_source
from datasets.utils.file_tree import seeded_split
from fakes.aircraft import aircraft_variants, write_aircraft
from fakes.caltech101 import caltech101_folders, pack_caltech101_zip, write_caltech101
from fakes.food101 import food101_classes, write_food101
from fakes.image_tree import label_of, label_of_tensor, pack_tar
from fakes.sun397 import write_sun397
from utils.errors import UserError
from utils.run_options import RunOptions


def load(name, root, verify_data=False, download=False):
    """A source built on a fake (fakes are subsets: --verify_data 0 accepts them with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_source(name)(root, download, verify_data)


def split_labels(source, split):
    """Labels of a split, checked against the label each fake image encodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images, labels = source.load_split(split)
    assert len(images) == len(labels) and labels.dtype == torch.long
    assert [label_of(images.image(i)) for i in range(len(images))] == labels.tolist()
    return labels


# ---- the four raw datasets -------------------------------------------------------------------------
def test_aircraft(tmp_path):
    write_aircraft(tmp_path, n_classes=5, per_class={"train": 2, "val": 1, "test": 3})
    source = load("aircraft", tmp_path)
    assert source.native_class_names() == ["707-320", "A300B4", "F-16A/B", "Falcon 2000", "Cessna 172"]
    assert source.native_class_names() == aircraft_variants(5)
    assert torch.bincount(split_labels(source, "train")).tolist() == [2] * 5
    assert torch.bincount(split_labels(source, "test")).tolist() == [3] * 5
    assert len(split_labels(source, "trainval")) == 15
    assert source.TEMPLATES[0] == "a photo of a {}, a type of aircraft."


def test_aircraft_checks_counts_and_listed_images(tmp_path):
    data = write_aircraft(tmp_path)
    with pytest.raises(UserError, match=r"variants.txt: found 4, expected 100.*--verify_data 0"):
        get_source("aircraft")(tmp_path, False, True)
    first_train = (data / "images_variant_train.txt").read_text().split()[0]
    (data / "images" / f"{first_train}.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of the 8 images listed in .*images_variant_train.txt are missing"):
        split_labels(load("aircraft", tmp_path), "train")


def test_caltech101_names_background_and_seeded_split(tmp_path):
    write_caltech101(tmp_path, n_classes=6, per_class=5)
    source = load("caltech101", tmp_path)
    assert caltech101_folders(3) == ["Faces", "Faces_easy", "Leopards"]
    assert source.native_class_names() == ["off-center face", "centered face", "leopard", "motorbike", "accordion",
                                           "airplane"]
    train, test = split_labels(source, "train"), split_labels(source, "test")
    assert len(train) + len(test) == 33 and len(train) == int(0.8 * 33)        # BACKGROUND_Google is left out
    # exactly torch's random_split(seed 42) over torchvision's order (classes sorted, then image_0001, ...)
    expected = torch.utils.data.random_split(range(33), [26, 7], generator=torch.Generator().manual_seed(42))
    assert seeded_split(33) == (list(expected[0]), list(expected[1]))
    everything = [label for label in range(6) for _ in range(5 + label % 2)]
    assert train.tolist() == [everything[i] for i in expected[0].indices]


def test_caltech101_real_names_line_up_with_folders():
    from datasets.sources.caltech101 import readable_names
    names = readable_names()
    assert len(names) == 101 and list(names) == sorted(names)
    assert names["Faces"] == "off-center face" and names["car_side"] == "side of a car"
    assert names["snoopy"] == "snoopy (cartoon beagle)" and names["yin_yang"] == "yin and yang symbol"


@pytest.mark.filterwarnings("ignore:Caltech-101")
def test_caltech101_from_the_official_zip(tmp_path):
    write_caltech101(tmp_path, n_classes=3, per_class=2)
    pack_caltech101_zip(tmp_path)
    with pytest.warns(UserWarning, match="checksum"):
        source = get_source("caltech101")(tmp_path, False, False)
    assert (tmp_path / "caltech101" / "101_ObjectCategories" / "Faces").is_dir()
    assert len(split_labels(source, "train")) + len(split_labels(source, "test")) == 7


def test_food101(tmp_path):
    write_food101(tmp_path, n_classes=5, per_class=(3, 2))
    source = load("food101", tmp_path)
    assert source.native_class_names() == [c.replace("_", " ") for c in food101_classes(5)]
    assert source.native_class_names()[:2] == ["apple pie", "baby back ribs"]
    assert torch.bincount(split_labels(source, "train")).tolist() == [3] * 5
    assert torch.bincount(split_labels(source, "test")).tolist() == [2] * 5
    assert source.TEMPLATES == ("a photo of a {}, a type of food.",)


def test_sun397_nested_classes_and_seeded_split(tmp_path):
    write_sun397(tmp_path, n_classes=5, per_class=4)
    source = load("sun397", tmp_path)
    assert source.native_class_names() == ["abbey", "airplane cabin", "apartment building outdoor",
                                           "balcony exterior", "balcony interior"]
    assert source.class_paths[2] == "apartment_building/outdoor"
    train, test = split_labels(source, "train"), split_labels(source, "test")
    n = sum(4 + label % 3 for label in range(5))
    assert len(train) == int(0.8 * n) and len(test) == n - int(0.8 * n)
    everything = [label for label in range(5) for _ in range(4 + label % 3)]
    assert sorted(torch.cat([train, test]).tolist()) == everything
    assert source.TEMPLATES == ("a photo of a {}.", "a photo of the {}.")


@pytest.mark.filterwarnings("ignore:.*--verify_data 0:UserWarning")
def test_sun397_listing_order_split_is_zscls(tmp_path):
    folder = write_sun397(tmp_path, n_classes=5, per_class=4)
    (folder / "a" / "abbey" / "not_an_image.txt").write_text("skipped")
    sorted_source, listed = load("sun397", tmp_path), load("sun397", tmp_path)
    listed.image_order = "listing"
    # ZSCL: torchvision's SUN397 lists Path.rglob("sun_*.jpg") (Python <= 3.11 pathlib), labels by class folder
    rglob = [str(p) for p in folder.rglob("sun_*.jpg")]
    classes = [line.strip("/") for line in (folder / "ClassName.txt").read_text().split()]
    rglob_labels = [classes.index(str(Path(p).parent.relative_to(folder))) for p in rglob]
    assert listed._items == (rglob, rglob_labels) and sorted(rglob) == sorted(sorted_source._items[0])
    train, test = seeded_split(len(rglob), 0.8, 42)
    images, labels = listed.load_split("test")
    assert images.paths == [rglob[i] for i in test] and labels.tolist() == [rglob_labels[i] for i in test]
    assert set(images.paths) != set(sorted_source.load_split("test")[0].paths)   # the two splits differ


@pytest.mark.parametrize("name, expected", [
    ("aircraft", r"fgvc-aircraft-2013b/data/variants.txt is missing.*fgvc-aircraft-2013b.tar.gz"),
    ("caltech101", r"caltech101/101_ObjectCategories is missing.*caltech-101.zip"),
    ("food101", r"food-101/meta/classes.txt is missing.*food-101.tar.gz"),
    ("sun397", r"SUN397/ClassName.txt is missing.*SUN397.tar.gz"),
])
def test_missing_data_names_path_and_source(tmp_path, name, expected):
    with pytest.raises(UserError, match=expected) as info:
        get_source(name)(tmp_path, False, True)
    assert "\n" not in str(info.value) and "--download 0" in str(info.value)


def test_checksum_mismatch_and_corrupted_archive(tmp_path):
    write_food101(tmp_path)
    pack_tar(tmp_path, "food-101", "food-101.tar.gz")
    with pytest.raises(UserError, match=r"food-101.tar.gz is corrupt or not the expected file.*--verify_data 0"):
        get_source("food101")(tmp_path, False, True)
    with pytest.warns(UserWarning, match="checksum"):
        source = get_source("food101")(tmp_path, False, False)           # a re-packed archive is accepted with a warning
    assert len(split_labels(source, "train")) == 12

    (tmp_path / "SUN397.tar.gz").write_bytes(b"not really a tarball")
    with pytest.raises(UserError, match="does not match"):
        get_source("sun397")(tmp_path, False, True)
    with pytest.raises(UserError, match="not a tar or zip archive|corrupt"):
        load("sun397", tmp_path)


def test_archive_without_the_expected_folder(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with tarfile.open(tmp_path / "fgvc-aircraft-2013b.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "other", arcname="other")
    with pytest.raises(UserError, match="does not contain fgvc-aircraft-2013b/data/variants.txt"):
        load("aircraft", tmp_path)


def test_file_backed_batches_go_through_the_loader(tmp_path, monkeypatch):
    """One real batch through the DataLoader path of a sequence of file-backed sources."""
    from datasets import mtil
    monkeypatch.setitem(mtil.ORDERS, "I", ("aircraft", "sun397"))
    write_aircraft(tmp_path, n_classes=3)
    write_sun397(tmp_path, n_classes=3, per_class=3)
    args = replace(RunOptions(), data_path=str(tmp_path), download=False, verify_data=False, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = mtil.MTIL(args, mtil.MTILOptions(sun397_split="listing"))
        assert ds.sources[1].image_order == "listing" and mtil.MTIL(args).sources[1].image_order == "sorted"
        batch = next(iter(ds.task_data(1, "train").batches(4, train=True)))
        test = next(iter(ds.task_data(1, "test").batches(4)))
    assert ds.classes_per_task == [3, 3]
    assert batch["inputs"].shape == (4, 3, 224, 224) and batch["labels"].min() >= 3
    assert test["not_aug_inputs"].shape[1:] == (3, 224, 224)
    # the test transform keeps a one-colour image's colour: its native label lines up with the run label
    assert [label_of_tensor(x) + 3 for x in test["not_aug_inputs"]] == test["labels"].tolist()


# ---- the whole benchmark --------------------------------------------------------------------------
ORDER_I = ["aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers102", "food101", "mnist", "oxford_pets",
           "stanford_cars", "sun397"]
ORDER_II = ["stanford_cars", "food101", "mnist", "oxford_pets", "flowers102", "sun397", "aircraft", "caltech101", "dtd",
            "eurosat", "cifar100"]
N_CLASSES = {"aircraft": 100, "caltech101": 101, "cifar100": 100, "dtd": 47, "eurosat": 10, "flowers102": 102,
             "food101": 101, "mnist": 10, "oxford_pets": 37, "stanford_cars": 196, "sun397": 397}
#: ZSCL's templates (mtil/src/datasets/collections.py); Caltech-101 and CIFAR-100 by count and examples.
TEMPLATES = {
    "aircraft": ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
    "dtd": tuple(f"a photo of {a} {{}} {k}." for a in ("a", "the") for k in ("texture", "pattern", "thing", "object")),
    "eurosat": ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                "a centered satellite photo of the {}."),
    "flowers102": ("a photo of a {}, a type of flower.",),
    "food101": ("a photo of a {}, a type of food.",),
    "mnist": ('a photo of the number: "{}".',),
    "oxford_pets": ("a photo of a {}, a type of pet.",),
    "stanford_cars": ("a photo of a {}, a type of car.", "a photo of a {}.", "a photo of the {}.", "a photo of my {}.",
                      "i love my {}!", "a photo of my dirty {}.", "a photo of my clean {}.", "a photo of my new {}.",
                      "a photo of my old {}."),
    "sun397": ("a photo of a {}.", "a photo of the {}."),
}
SOME_TEMPLATES = {"caltech101": (34, "a photo of a {}.", "a {} in a video game.", "the plastic {}.",
                                  "a doodle of the {}."),
                  "cifar100": (18, "a photo of a {}.", "a blurry photo of the {}.", "a photo of the big {}.")}
#: (task, native index) -> MTIL's class name
SOME_NAMES = {("caltech101", 0): "off-center face", ("caltech101", 19): "side of a car",
              ("eurosat", 0): "annual crop land", ("eurosat", 9): "lake or sea", ("mnist", 3): "3 - three",
              ("sun397", 2): "apartment building/outdoor", ("food101", 1): "baby back ribs",
              ("aircraft", 3): "Falcon 2000", ("flowers102", 0): "pink primrose", ("dtd", 0): "banded"}
TENSOR_TASKS = {"cifar100", "mnist"}          # fakes whose pixel [0, 0] red is the label (the others: label colours)


def write_mtil_fakes(root, full=True):
    """Fakes of all eleven datasets (plus CIFAR10). ``full``: with every dataset's real number of classes;
    otherwise Aircraft, Caltech-101, Food-101 and SUN397 have a few (fewer prompts to encode)."""
    from fakes.cifar import write_cifar10, write_cifar100
    from fakes.dtd import write_dtd
    from fakes.eurosat import write_eurosat
    from fakes.flowers102 import write_flowers102
    from fakes.mnist import write_mnist
    from fakes.oxford_pets import write_oxford_pets
    from fakes.stanford_cars import write_stanford_cars
    write_aircraft(root, n_classes=100 if full else 4, per_class={"train": 3, "test": 1})
    write_caltech101(root, n_classes=101 if full else 4, per_class=2)
    write_cifar100(root, per_class_train=3, per_class_test=1)
    write_cifar10(root, per_class_train=1, per_class_test=1)
    write_dtd(root)
    write_eurosat(root)
    write_flowers102(root)
    write_food101(root, n_classes=101 if full else 4, per_class=(3, 1))
    write_mnist(root, per_class_train=3, per_class_test=1)
    write_oxford_pets(root)
    write_stanford_cars(root)
    write_sun397(root, n_classes=397 if full else 4, per_class=2)
    return root


@pytest.fixture(scope="module")
def mtil_root(tmp_path_factory):
    return write_mtil_fakes(tmp_path_factory.mktemp("mtil"))


def mtil(root, class_order="native", seed=0, **options):
    from datasets.mtil import MTIL, MTILOptions
    args = replace(RunOptions(), data_path=str(root), download=False, verify_data=False, num_workers=0,
                   class_order=class_order, seed=seed, **{k: options.pop(k) for k in ("eval_future", "stop_after")
                                                          if k in options})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MTIL(args, MTILOptions(**options))


def split(ds, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.split(name)


def test_a_custom_mtil_order_takes_framework_or_source_names(mtil_root):
    ds = mtil(mtil_root, mtil_order="DTD,eurosat,MNIST")
    assert ds.task_names == ["dtd", "eurosat", "mnist"] and ds.classes_per_task == [47, 10, 10]
    with pytest.raises(UserError, match="unknown dataset 'CIFAR10'"):    # evaluated only, never trained
        mtil(mtil_root, mtil_order="DTD,CIFAR10")


@pytest.mark.parametrize("order, names", [("I", ORDER_I), ("II", ORDER_II)])
def test_mtil_tasks_classes_and_templates(mtil_root, order, names):
    ds = mtil(mtil_root, class_order="random", seed=3, mtil_order=order)
    assert ds.N_TASKS == 11 and ds.task_names == names and ds.eval_only_tasks == []
    assert ds.classes_per_task == [N_CLASSES[n] for n in names] and ds.n_classes == 1201
    for t, name in enumerate(names):
        templates = ds.task_templates(t)
        if name in TEMPLATES:
            assert templates == TEMPLATES[name], name
        else:
            count, *members = SOME_TEMPLATES[name]
            assert len(templates) == count and templates[0] == members[0] and set(members) <= set(templates)
    # names line up with labels under a random order, which keeps every class in its task
    native = ds.native_class_names()
    assert [native[i] for i in ds.class_order] == ds.class_names
    for (name, index), expected in SOME_NAMES.items():
        lo, _ = ds.get_offsets(names.index(name))
        assert native[lo + index] == expected
    for t in range(11):
        lo, hi = ds.get_offsets(t)
        assert sorted(ds.class_order[lo:hi]) == list(range(lo, hi))
    # every test image's own label (its colour) is the native class behind its run label
    images, labels = split(ds, "test")
    tasks = ds.task_of_label(labels)
    for i in range(len(labels)):
        name, (lo, _) = names[int(tasks[i])], ds.get_offsets(int(tasks[i]))
        r, g, _ = images.image(i).getpixel((0, 0))
        own = r if name in TENSOR_TASKS else r + 256 * g
        assert lo + own == ds.class_order[int(labels[i])], (name, i)


def test_mtil_few_shot(mtil_root):
    full, few = mtil(mtil_root), mtil(mtil_root, mtil_few_shot=2)
    _, full_labels = split(full, "train")
    _, few_labels = split(few, "train")
    expected = torch.bincount(full_labels, minlength=1201).clamp(max=2)
    assert torch.equal(torch.bincount(few_labels, minlength=1201), expected)
    assert int(few_labels.bincount(minlength=1201)[few.get_offsets(2)[0]]) == 2    # CIFAR100: 2 of its 3
    assert torch.equal(split(full, "test")[1], split(few, "test")[1])              # test sets stay whole
    # the same images in both orders (drawn per dataset), other images with another --seed
    few_ii, other_seed = mtil(mtil_root, mtil_order="II", mtil_few_shot=2), mtil(mtil_root, seed=1, mtil_few_shot=2)

    def chosen(ds, name):
        images, labels = split(ds, "train")
        lo, hi = ds.get_offsets(ds.task_names.index(name))
        idx = torch.nonzero((labels >= lo) & (labels < hi)).flatten().tolist()
        return [(int(labels[i]) - lo, images.image(i).tobytes()) for i in idx]

    for name in ("aircraft", "cifar100", "food101"):
        assert chosen(few, name) == chosen(few_ii, name)
    assert chosen(few, "cifar100") != chosen(other_seed, "cifar100")


def test_mtil_cifar10_is_evaluation_only(mtil_root):
    with pytest.raises(UserError, match="--eval_future 1 --stop_after 11"):
        mtil(mtil_root, mtil_eval_cifar10=True)
    ds = mtil(mtil_root, mtil_eval_cifar10=True, eval_future=True, stop_after=11)
    assert ds.N_TASKS == 12 and ds.task_names[-1] == "cifar10" and ds.eval_only_tasks == [11]
    assert ds.classes_per_task[-1] == 10 and ds.class_names[-10:][:2] == ["airplane", "automobile"]
    assert len(ds.task_templates(11)) == 18


def test_mtil_errors(mtil_root, tmp_path):
    with pytest.raises(UserError, match="seed1993 .* move classes between"):
        mtil(mtil_root, class_order="seed1993")
    # StanfordCars cannot be downloaded, so it is reported before anything else is fetched
    with pytest.raises(UserError, match="Stanford Cars: .* is missing.*by hand"):
        mtil(tmp_path)


@pytest.fixture(scope="module")
def small_mtil_root(tmp_path_factory):
    return write_mtil_fakes(tmp_path_factory.mktemp("mtil-small"), full=False)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One feature cache for both orders: the second run reuses every prompt's text features."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.mark.slow
@pytest.mark.parametrize("order, first", [("I", "aircraft"), ("II", "stanford_cars")])
def test_mtil_zero_shot_end_to_end(small_mtil_root, shared_cache, tmp_path, order, first):
    """The done-when command: ``main.py --model zeroshot-clip --dataset mtil --backbone micro-clip`` on the fakes."""
    from conftest import load_results, only_run_dir, run_main
    out = run_main(["--model", "zeroshot-clip", "--dataset", "mtil", "--backbone", "micro-clip",
                    "--data_path", str(small_mtil_root), "--mtil_order", order, "--verify_data", "0", "--download", "0",
                    "--quiet", "1", "--feature_cache", str(shared_cache)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = load_results(only_run_dir(tmp_path / "results"))
    assert results["n_tasks"] == 11 and results["tasks_completed"] == 11
    matrix = results["accuracy_matrix"]["task_il"]
    assert len(matrix) == 11 and all(row[t] is not None for t, row in enumerate(matrix))
    names = results["class_names"]
    assert len(names) == 4 + 4 + 100 + 47 + 10 + 102 + 4 + 10 + 37 + 196 + 4
    assert names[0] == {"aircraft": "707-320", "stanford_cars": "AM General Hummer SUV 2000"}[first]
