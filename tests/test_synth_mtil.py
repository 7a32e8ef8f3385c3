"""synth-mtil (datasets/synth_mtil.py, datasets/utils/synthetic_tasks.py): seven synthetic datasets in
sequence, MTIL-style, each with its own classes, names, templates and look."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.utils.split_memo import RENDERED
from datasets.utils.synthetic_tasks import ORDERS, SYNTH_TASKS, make_task_split
from datasets.utils.synthetic_world import SyntheticWorld
from tests.conftest import load_results, only_run_dir
from tests.test_synthetic_world import linear_probe_accuracy, pooled_pixels

SMALL = ["--synth_train_per_class", "8", "--synth_test_per_class", "12"]


def make(**overrides):
    from datasets import get_dataset_class
    from utils.run_options import RunOptions
    cls = get_dataset_class("synth-mtil")
    return cls(RunOptions(**{k: v for k, v in overrides.items() if k in RunOptions.__dataclass_fields__}),
               cls.Options(**{k: v for k, v in overrides.items() if k in cls.Options.__dataclass_fields__}))


def test_seven_datasets_with_their_own_classes_names_and_templates():
    assert len(SYNTH_TASKS) >= 6
    names = [n for t in SYNTH_TASKS.values() for n in t.class_names]
    assert len(names) == len(set(names)) == 82
    assert len({t.templates for t in SYNTH_TASKS.values()}) == len(SYNTH_TASKS)
    assert sorted(ORDERS["I"]) == sorted(ORDERS["II"]) == sorted(SYNTH_TASKS) and ORDERS["I"] != ORDERS["II"]
    data = make(synth_train_per_class=4, synth_test_per_class=3)
    assert data.SETTING == "task-il" and data.N_TASKS == 7
    for t, task in enumerate(data.tasks):
        lo, hi = data.get_offsets(t)
        assert data.class_names[lo:hi] == list(task.class_names)
        assert data.task_templates(t) == task.templates
    images, labels = data.split("test")
    assert images.shape == (82 * 3, 3, 32, 32) and torch.equal(labels, data.split_labels("test"))


def test_both_orders_see_the_same_images_per_dataset():
    one, two = make(mtil_order="I", synth_test_per_class=3), make(mtil_order="II", synth_test_per_class=3)
    for name in ("shades", "counting"):
        a, b = one.task_names.index(name), two.task_names.index(name)
        img_a, lab_a = one.split("test")
        img_b, lab_b = two.split("test")
        lo_a, hi_a = one.get_offsets(a)
        lo_b, hi_b = two.get_offsets(b)
        sel_a = (lab_a >= lo_a) & (lab_a < hi_a)
        sel_b = (lab_b >= lo_b) & (lab_b < hi_b)
        assert torch.equal(img_a[sel_a], img_b[sel_b])


def test_a_custom_order_trains_those_datasets_in_that_order():
    """``--mtil_order a,b,c``: a subset (leave-one-out) or another order, the same images per dataset."""
    full, custom = make(synth_test_per_class=3), make(mtil_order="Shapes, counting,icons", synth_test_per_class=3)
    assert custom.task_names == ["shapes", "counting", "icons"] and custom.N_TASKS == 3
    assert custom.n_classes == sum(len(SYNTH_TASKS[n].class_names) for n in custom.task_names)
    img_c, lab_c = custom.split("test")
    img_f, lab_f = full.split("test")
    lo_c, hi_c = custom.get_offsets(1)
    lo_f, hi_f = full.get_offsets(full.task_names.index("counting"))
    assert torch.equal(img_c[(lab_c >= lo_c) & (lab_c < hi_c)], img_f[(lab_f >= lo_f) & (lab_f < hi_f)])
    assert custom.describe() != full.describe()                     # feature-cache keys tell them apart


@pytest.mark.parametrize("order, message", [
    ("III", "neither a named order"),
    ("shapes,shpaes", "Did you mean 'shapes'"),
    ("shapes,Shapes", "listed twice"),
])
def test_a_bad_custom_order_is_a_one_line_error(order, message):
    from utils.errors import UserError
    with pytest.raises(UserError, match=message) as info:
        make(mtil_order=order, synth_test_per_class=3)
    assert "--mtil_order" in str(info.value) and "\n" not in str(info.value)


def test_splits_are_deterministic_and_train_differs_from_test():
    world = SyntheticWorld(0)
    task = SYNTH_TASKS["scenes"]
    a = make_task_split(world, task, 4, "train")
    RENDERED.clear()                                   # rendered again, not handed out by the memo
    b = make_task_split(SyntheticWorld(0), task, 4, "train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], make_task_split(world, task, 4, "test")[0])
    assert not torch.equal(a[0], make_task_split(SyntheticWorld(1), task, 4, "train")[0])


@pytest.mark.parametrize("name", sorted(SYNTH_TASKS))
def test_every_dataset_is_learnable_from_pixels(name):
    """Each label is in the image: a linear probe on pooled pixels beats chance clearly (the ceiling a
    trained method can reach is far above zero-shot where zero-shot is poor)."""
    world = SyntheticWorld(0)
    task = SYNTH_TASKS[name]
    x, y = make_task_split(world, task, 60, "train")
    xt, yt = make_task_split(world, task, 20, "test")
    features = pooled_pixels
    if name == "textures":   # translation-invariant statistics for patterns
        from tests.test_synthetic_world import radial_spectrum
        features = radial_spectrum
    if name == "counting":   # how much of the image the objects cover: the grey-level quantiles
        def features(images):
            return images.float().mean(1).flatten(1).sort(1).values[:, ::8] / 255
    acc = linear_probe_accuracy(features(x), y, features(xt), yt)
    assert acc > 2.0 / len(task.class_names), (name, acc)


@pytest.fixture(scope="module")
def micro_clip():
    from backbone.micro_clip import create_micro_clip
    return create_micro_clip()


@pytest.mark.parametrize("name", sorted(SYNTH_TASKS))
def test_every_dataset_is_learnable_from_micro_clips_frozen_features(name, micro_clip):
    """What the pixels hold must reach the model too: a probe on micro-clip's frozen image features reaches three
    times chance on every dataset, so a method that trains on one has something it can learn. Measured (60 / 20
    images per class): counting 40.0 % (3.6 x chance), textures 52.5 (4.2), styles 80.0 (6.4), shapes 83.5 (8.3),
    shades 97.9 (11.8; 99.2 in world version 2), scenes 84.0 (12.6), icons 89.5 (17.9). The first scenes design,
    pairs of small shapes, fails it: 14.3 % (2.1 x), and whole fine-tuning did not learn it either."""
    from backbone.micro_clip import encode_images
    world, task = SyntheticWorld(0), SYNTH_TASKS[name]
    x, y = make_task_split(world, task, 60, "train")
    xt, yt = make_task_split(world, task, 20, "test")
    acc = linear_probe_accuracy(encode_images(micro_clip, x), y, encode_images(micro_clip, xt), yt)
    assert acc > 3.0 / len(task.class_names), (name, acc)


def test_seed1993_order_is_refused(main_runner):
    out = main_runner(["--model", "zeroshot-clip", "--dataset", "synth-mtil", "--class_order", "seed1993"])
    assert out.returncode == 2 and "seed1993" in out.stderr and "Traceback" not in out.stderr


def test_zero_shot_run_records_the_mtil_summary(main_runner, tmp_path):
    out = main_runner(["--model", "zeroshot-clip", "--dataset", "synth-mtil", "--eval_future", "1", "--quiet", "1",
                       "--feature_cache", str(tmp_path / "cache"), *SMALL])
    assert out.returncode == 0, out.stderr[-2000:]
    res = load_results(only_run_dir(tmp_path / "results"))
    A = np.array(res["accuracy_matrix"]["task_il"])
    assert A.shape == (7, 7)
    mtil = res["metrics"]["task_il"]["mtil"]
    assert mtil["last"] == pytest.approx(A[-1].mean()) and mtil["avg"] == pytest.approx(A.mean())
    # zero-shot never changes, so Transfer = Avg's upper triangle of identical rows
    assert np.allclose(A, A[0])
    zero_shot = dict(zip(res["config"]["task_names"] if "task_names" in res.get("config", {}) else ORDERS["I"], A[0]))
    assert min(zero_shot.values()) < 25 and max(zero_shot.values()) > 60, zero_shot   # near chance .. high


def test_the_world_version_is_part_of_what_identifies_the_images(monkeypatch):
    """Features cached from an earlier world design must never be reused: the feature-cache key hashes
    ``describe()``, which carries ``CONTENT_VERSION``."""
    from utils.feature_cache import cache_key
    data = make(synth_train_per_class=2, synth_test_per_class=2)
    now = data.describe()
    assert now["content_version"] == type(data).CONTENT_VERSION == 3
    monkeypatch.setattr(type(data), "CONTENT_VERSION", type(data).CONTENT_VERSION + 1)
    assert cache_key(dataset=data.describe()) != cache_key(dataset=now)
