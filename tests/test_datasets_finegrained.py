"""File-backed fine-grained datasets on tiny fakes in their native layouts: EuroSAT, DTD, Oxford-IIIT Pet,
Flowers-102, RESISC45, CUB-200-2011 and Stanford Cars as raw sources, and the ``seq-eurosat``,
``seq-cub200`` and ``seq-cars196`` benchmarks (tasks, class orders, names vs labels, a DataLoader batch);
missing data, corrupted archives and checksum mismatches give one-line errors."""
import warnings
from dataclasses import replace

import pytest
import torch

from datasets import get_dataset_class
from datasets.sources import get_source
from datasets.utils.file_tree import seeded_split
from datasets.utils.source_dataset import SequenceDataset
from fakes.cub200 import write_cub200
from fakes.dtd import CLASSES as DTD_CLASSES, write_dtd
from fakes.eurosat import FOLDERS as EUROSAT_FOLDERS, pack_eurosat, write_eurosat
from fakes.flowers102 import write_flowers102
from fakes.image_tree import label_of, label_of_tensor
from fakes.oxford_pets import write_oxford_pets
from fakes.resisc45 import write_resisc45
from fakes.stanford_cars import class_names as car_names, write_stanford_cars
from utils.errors import UserError
from utils.run_options import RunOptions

# Fakes are subsets: with --verify_data 0 their image counts (and fake .mat checksums) only warn.
pytestmark = pytest.mark.filterwarnings("ignore:.*using it anyway:UserWarning")


def args(root, **kw):
    return replace(RunOptions(), data_path=str(root), download=False, num_workers=0, **kw)


def quiet(make):
    """Fakes are not the real files: where a checksum is checked, --verify_data 0 only warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


def source(name, root, verify_data=False):
    return quiet(lambda: get_source(name)(root, False, verify_data))


def benchmark(name, root, **kw):
    return quiet(lambda: get_dataset_class(name)(args(root, verify_data=False, **kw)))


def split_labels(src, split):
    """Labels of a source's split, checked against the label each fake image encodes."""
    images, labels = src.load_split(split)
    assert labels.dtype == torch.long and len(images) == len(labels)
    assert [label_of(images.image(i)) for i in range(len(images))] == labels.tolist()
    return labels


def check_batch(ds, task, offset=0):
    """One augmented training batch through the DataLoader: shapes, labels in the task, and every image's
    native label (its colour, + ``offset`` in a sequence of datasets) is the class its run label names."""
    data = ds.task_data(task, "train")
    batch = next(iter(data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0), train=True)))
    lo, hi = ds.get_offsets(task)
    n = min(4, len(data))
    assert batch["inputs"].shape == (n, 3, 224, 224) and batch["not_aug_inputs"].shape == (n, 3, 224, 224)
    assert all(lo <= label < hi for label in batch["labels"].tolist())
    assert [label_of_tensor(x) + offset for x in batch["not_aug_inputs"]] == \
        [int(ds.class_order[label]) for label in batch["labels"]]
    return batch


def names_line_up(ds, native_names):
    """Over the whole test split: the run label of each image names the class its colour encodes."""
    images, labels = ds.split("test")
    for i in range(len(images)):
        assert ds.class_names[int(labels[i])] == native_names[label_of(images.image(i))]


# ---- EuroSAT and seq-eurosat -----------------------------------------------------------------------
EUROSAT_MTIL = ["annual crop land", "forest", "brushland or shrubland", "highway or road",
                "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
                "residential buildings or homes or apartments", "river", "lake or sea"]


def test_eurosat_is_mtils_seeded_split_with_mtils_names(tmp_path):
    write_eurosat(tmp_path, per_class=5)
    with pytest.raises(UserError, match=r"EuroSAT: images in .*2750: found 50, expected 27000.*--verify_data 0"):
        get_source("eurosat")(tmp_path, False, True)
    src = source("eurosat", tmp_path)
    assert src.native_class_names() == EUROSAT_MTIL
    from datasets.sources.eurosat import MTIL_CLASS_NAMES
    assert list(MTIL_CLASS_NAMES) == EUROSAT_MTIL
    assert src.TEMPLATES == ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                             "a centered satellite photo of the {}.")
    train, test = split_labels(src, "train"), split_labels(src, "test")
    # torch's random_split(seed 42, 80/20) over ImageFolder order (folders sorted, then file names sorted)
    expected = torch.utils.data.random_split(range(50), [40, 10], generator=torch.Generator().manual_seed(42))
    assert seeded_split(50) == (list(expected[0]), list(expected[1]))
    files = sorted(f"{f}_{i}.jpg" for f in EUROSAT_FOLDERS for i in range(1, 6))     # ImageFolder's file order
    assert [p.rsplit("/", 1)[1] for p in src.load_split("train")[0].paths] == [files[i] for i in expected[0]]
    assert len(train) == 40 and len(test) == 10


def test_seq_eurosat_tasks_orders_and_a_batch(tmp_path):
    write_eurosat(tmp_path, per_class=3)
    ds = benchmark("seq-eurosat", tmp_path)
    assert (ds.N_TASKS, ds.classes_per_task, ds.n_classes) == (5, [2] * 5, 10)
    assert ds.class_names == EUROSAT_MTIL and ds.get_offsets(4) == (8, 10)
    assert ds.task_templates(0)[0] == "a centered satellite photo of {}."
    a, b = benchmark("seq-eurosat", tmp_path, class_order="random", seed=1), \
        benchmark("seq-eurosat", tmp_path, class_order="random", seed=1)
    assert a.class_order.tolist() == b.class_order.tolist() != list(range(10))
    names_line_up(a, EUROSAT_MTIL)
    check_batch(a, 2)
    order = tmp_path / "order.txt"
    order.write_text("lake or sea\nriver\n" + "\n".join(str(i) for i in range(8)) + "\n")
    c = benchmark("seq-eurosat", tmp_path, class_order=str(order))
    assert c.class_names[:3] == ["lake or sea", "river", "annual crop land"]
    check_batch(c, 0)
    assert len(c.task_data(0, "test")) == 2 * 3 - len(c.task_data(0, "train"))


# ---- DTD, Oxford-IIIT Pet, Flowers-102, RESISC45 -----------------------------------------------------
def test_dtd_partition_1_as_torchvision_and_mtil(tmp_path):
    write_dtd(tmp_path, per_split=1)
    src = source("dtd", tmp_path)
    with pytest.raises(UserError, match=r"DTD: images in .*labels/test1.txt: found 47, expected 1880"):
        source("dtd", tmp_path, verify_data=True).load_split("test")
    assert src.native_class_names() == list(DTD_CLASSES) and len(DTD_CLASSES) == 47
    train, val, test = (split_labels(src, s) for s in ("train", "val", "test"))
    assert train.tolist() == val.tolist() == test.tolist() == list(range(47))
    assert src.load_split("train")[0].paths[0].endswith("dtd/dtd/images/banded/banded_0000.jpg")  # train1.txt only
    assert len(src.TEMPLATES) == 8 and src.TEMPLATES[0] == "a photo of a {} texture."


def test_oxford_pets_trainval_test_and_torchvision_names(tmp_path):
    write_oxford_pets(tmp_path, per_split=2)
    src = source("oxford_pets", tmp_path)
    names = src.native_class_names()
    assert len(names) == 37 and names[:3] == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]
    assert names[34] == "Staffordshire Bull Terrier" and names[-1] == "Yorkshire Terrier"
    assert torch.bincount(split_labels(src, "train")).tolist() == [2] * 37
    assert torch.bincount(split_labels(src, "test")).tolist() == [2] * 37
    assert src.TEMPLATES == ("a photo of a {}, a type of pet.",)


def test_flowers102_setid_splits_and_clip_names(tmp_path):
    write_flowers102(tmp_path, per_split=(1, 1, 2))
    with pytest.raises(UserError, match=r"imagelabels.mat is corrupt or not the expected file.*--verify_data 0"):
        source("flowers102", tmp_path, verify_data=True)                   # the fake .mat files are not the real ones
    with pytest.warns(UserWarning, match="checksum"):
        src = get_source("flowers102")(tmp_path, False, False)
    names = src.native_class_names()
    assert len(names) == 102 and names[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    assert names[59] == "pink-yellow dahlia" and names[-1] == "blackberry lily"
    assert [torch.bincount(split_labels(src, s), minlength=102).tolist() for s in ("train", "val", "test")] == \
        [[1] * 102, [1] * 102, [2] * 102]
    assert src.TEMPLATES == ("a photo of a {}, a type of flower.",)


def test_resisc45_image_folder_and_seeded_split(tmp_path):
    write_resisc45(tmp_path, per_class=3)
    src = source("resisc45", tmp_path)
    names = src.native_class_names()
    assert len(names) == 45 and names[2] == "baseball diamond" and names[-2] == "thermal power station"
    train, test = split_labels(src, "train"), split_labels(src, "test")
    assert (len(train), len(test)) == (108, 27)
    assert sorted(torch.cat([train, test]).tolist()) == [c for c in range(45) for _ in range(3)]


def test_sources_compose_into_a_sequence_of_tasks(tmp_path):
    """What MTIL does with these sources: one task each, own classes and templates, images concatenated."""
    write_eurosat(tmp_path, per_class=2)
    write_dtd(tmp_path)
    write_oxford_pets(tmp_path)

    class Trio(SequenceDataset):
        NAME = "trio"

        def __init__(self, run_args):
            self.sources = [source(n, tmp_path) for n in ("eurosat", "dtd", "oxford_pets")]
            super().__init__(run_args)

    ds = Trio(args(tmp_path, class_order="random", seed=3))
    assert ds.classes_per_task == [10, 47, 37] and ds.get_offsets(2) == (57, 94)
    assert ds.task_templates(2) == ("a photo of a {}, a type of pet.",)
    assert sorted(ds.class_order[10:57].tolist()) == list(range(10, 57))        # classes stay in their task
    batch = check_batch(ds, 2, offset=57)
    pets = source("oxford_pets", tmp_path).native_class_names()
    assert [ds.class_names[label] for label in batch["labels"].tolist()] == \
        [pets[label_of_tensor(x)] for x in batch["not_aug_inputs"]]


# ---- CUB-200 and Stanford Cars ---------------------------------------------------------------------
def test_seq_cub200(tmp_path):
    write_cub200(tmp_path, per_split=1)
    src = source("cub200", tmp_path)
    names = src.native_class_names()
    assert len(names) == 200 and names[:2] == ["Black footed Albatross", "Laysan Albatross"]
    assert split_labels(src, "train").tolist() == list(range(200)) == split_labels(src, "test").tolist()
    ds = benchmark("seq-cub200", tmp_path, class_order="seed1993")
    assert (ds.N_TASKS, ds.classes_per_task) == (10, [20] * 10)
    assert ds.task_templates(0) == ("a photo of a {}, a type of bird.",)
    names_line_up(ds, names)
    batch = check_batch(ds, 9)
    x = batch["not_aug_inputs"]                                    # mammoth's normalisation: ImageNet statistics
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(ds.normalize(x), (x - mean) / std)


def test_seq_cars196_unequal_tasks(tmp_path):
    write_stanford_cars(tmp_path, per_split=1)
    src = source("stanford_cars", tmp_path)
    assert src.native_class_names() == car_names() and src.native_class_names()[0] == "AM General Hummer SUV 2000"
    assert split_labels(src, "train").tolist() == list(range(196)) == split_labels(src, "test").tolist()
    ds = benchmark("seq-cars196", tmp_path, class_order="random", seed=0)
    assert ds.classes_per_task == [20] * 9 + [16] and ds.get_offsets(9) == (180, 196)
    assert len(ds.task_data(9, "test")) == 16 and len(ds.TEMPLATES) == 9
    names_line_up(ds, car_names())
    x = check_batch(ds, 9)["not_aug_inputs"]
    assert torch.equal(ds.normalize(x), x)                         # mammoth's normalisation: none (0 / 1)


# ---- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("eurosat", r"eurosat/2750/AnnualCrop is missing.*--download 0.*EuroSAT.zip"),
    ("dtd", r"dtd/dtd/images is missing.*dtd-r1.0.1.tar.gz"),
    ("oxford_pets", r"oxford-iiit-pet/annotations/trainval.txt is missing.*annotations.tar.gz"),
    ("flowers102", r"flowers-102/jpg/image_00001.jpg is missing.*102flowers.tgz"),
    ("resisc45", r"NWPU-RESISC45/airplane is missing.*NWPU-RESISC45.zip"),
    ("cub200", r"CUB_200_2011/images.txt is missing.*CUB_200_2011.tgz"),
    ("stanford_cars", r"stanford_cars/devkit/cars_meta.mat is missing.*by hand.*kaggle.*car_devkit.tgz"),
])
def test_missing_data_names_path_layout_and_source(tmp_path, name, expected):
    with pytest.raises(UserError, match=expected) as info:
        get_source(name)(tmp_path, False, True)
    assert "\n" not in str(info.value)


def test_missing_parts_of_a_dataset(tmp_path):
    pets = write_oxford_pets(tmp_path)
    (pets / "images" / "Abyssinian_100.jpg").unlink()
    with pytest.raises(UserError, match=r"oxford-iiit-pet/images/Abyssinian_100.jpg is missing.*images.tar.gz"):
        source("oxford_pets", tmp_path)
    flowers = write_flowers102(tmp_path)
    (flowers / "setid.mat").unlink()
    with pytest.raises(UserError, match=r"flowers-102/setid.mat is missing.*flowers/102/setid.mat"):
        source("flowers102", tmp_path)
    cub = write_cub200(tmp_path)
    (cub / "images" / (cub / "images.txt").read_text().split()[1]).unlink()       # image 1, a train image
    with pytest.raises(UserError, match=r"1 of the 200 images listed in .*images.txt are missing"):
        source("cub200", tmp_path).load_split("train")
    cars = write_stanford_cars(tmp_path)
    (cars / "cars_test_annos_withlabels.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match=r"cars_test_annos_withlabels.mat is not a readable MATLAB file"):
        source("stanford_cars", tmp_path).load_split("test")


def test_corrupted_archive_and_checksum_mismatch(tmp_path):
    (tmp_path / "EuroSAT.zip").write_bytes(b"not really a zip")
    with pytest.raises(UserError, match=r"EuroSAT.zip is corrupt or not the expected file.*--verify_data 0"):
        get_source("eurosat")(tmp_path, False, True)
    with pytest.warns(UserWarning, match="checksum"), pytest.raises(UserError, match="not a tar or zip archive"):
        get_source("eurosat")(tmp_path, False, False)

    (tmp_path / "EuroSAT.zip").unlink()
    write_eurosat(tmp_path, per_class=2)
    pack_eurosat(tmp_path)                                  # a re-packed (subset) archive: a valid zip, wrong md5
    with pytest.raises(UserError, match=r"checksum md5:c8fa0143\S* does not match"):
        get_source("eurosat")(tmp_path, False, True)
    with pytest.warns(UserWarning, match="--verify_data 0"):
        src = get_source("eurosat")(tmp_path, False, False)      # ... accepted with a warning, and extracted
    assert (tmp_path / "eurosat" / "2750" / "SeaLake" / "SeaLake_2.jpg").is_file()
    assert len(split_labels(src, "train")) == 16
