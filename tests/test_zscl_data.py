"""ZSCL's data conventions: ``--class_order zscl`` is ZSCL's own class-incremental order (its
``cil/class_orders/*.yaml``, not seed 1993) on CIFAR-100 and TinyImageNet and is refused elsewhere; the Conceptual
Captions reference images are read from the ``_output.csv`` ZSCL's downloader writes, with one-line errors when the
file or an image is missing. All on fakes in the native layouts."""
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from datasets import get_dataset_class
from datasets.reference import CC_FOLDER, CC_IMAGES_CSV, create_reference_images
from fakes.cifar import write_cifar10, write_cifar100
from fakes.imagenet_family import write_tinyimagenet
from utils.errors import UserError
from utils.run_options import RunOptions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")      # the fakes fail count and checksum checks

#: the first and last classes of ZSCL's cil/class_orders/cifar100.yaml and tinyimagenet.yaml (read there)
CIFAR100_HEAD, CIFAR100_TAIL = [87, 0, 52, 58, 44, 91, 68, 97], [98, 13, 99, 7, 34, 55, 54, 26, 35, 39]
TINY_HEAD, TINY_TAIL = [131, 181, 22, 172, 144, 92, 97, 187], [103, 124, 130, 66, 10, 107, 194, 98]


def args(root, **kw):
    return replace(RunOptions(), data_path=str(root), download=False, verify_data=False, num_workers=0, **kw)


def test_class_order_zscl_is_zscls_own_order(tmp_path):
    write_cifar100(tmp_path)
    cifar = get_dataset_class("seq-cifar100")(args(tmp_path, class_order="zscl"))
    order = cifar.class_order.tolist()
    assert order[:8] == CIFAR100_HEAD and order[-10:] == CIFAR100_TAIL and sorted(order) == list(range(100))
    assert order != np.random.RandomState(1993).permutation(100).tolist()          # not the iCaRL order
    images, labels = cifar.split("train")           # the fake writes the native label into each image's first byte
    assert (cifar.class_order[labels.numpy()] == images[:, 0, 0, 0].numpy()).all()

    write_tinyimagenet(tmp_path)
    cls = get_dataset_class("seq-tinyimagenet")
    tiny = cls(args(tmp_path, class_order="zscl"), cls.Options(tinyimagenet_split="b100", tinyimagenet_steps=10))
    order = tiny.class_order.tolist()
    assert order[:8] == TINY_HEAD and order[-8:] == TINY_TAIL and sorted(order) == list(range(200))
    assert tiny.classes_per_task == [100] + [10] * 10

    write_cifar10(tmp_path)
    with pytest.raises(UserError, match="ZSCL publishes class orders for seq-cifar100 and seq-tinyimagenet only"):
        get_dataset_class("seq-cifar10")(args(tmp_path, class_order="zscl"))


def write_cc_images(root, n=4):
    """``root/conceptual_captions``: ``n`` images and the ``title<TAB>filepath`` CSV ZSCL's gather_cc.py writes."""
    folder = root / CC_FOLDER
    rows = []
    for i in range(n):
        path = folder / "cc_data" / "val" / str(i % 2) / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 30), (60 * i, 10, 200)).save(path)
        rows.append(f"caption number {i}\tcc_data/val/{i % 2}/{i}.jpg\n")
    (folder / CC_IMAGES_CSV).write_text("title\tfilepath\n" + "".join(rows))
    return folder


def test_conceptual_captions_reference_images(tmp_path):
    with pytest.raises(UserError, match=f"{CC_IMAGES_CSV}' is missing.*gather_cc.py") as err:
        create_reference_images("conceptual_captions", tmp_path)
    assert "\n" not in str(err.value)
    folder = write_cc_images(tmp_path)
    images = create_reference_images("conceptual_captions", tmp_path, image_size=24, num_workers=0)
    assert len(images) == 4 and images.describe()["name"] == "conceptual_captions"
    batch = next(images.batches(8))
    assert batch.images.shape == (4, 3, 24, 24) and batch.indexes.tolist() == [0, 1, 2, 3]
    assert abs(float(batch.images[3, 0].mean()) - 180 / 255) < 0.02                  # the 4th image's red channel
    assert len(create_reference_images("conceptual_captions", tmp_path, n=2, seed=1)) == 2
    (folder / "cc_data" / "val" / "1" / "3.jpg").unlink()
    with pytest.raises(UserError, match="3.jpg', listed in .* is missing"):
        create_reference_images("conceptual_captions", tmp_path)
