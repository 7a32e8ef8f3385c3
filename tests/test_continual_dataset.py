"""Class orders, task splits and label remapping of ContinualDataset."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from datasets import get_dataset_class, list_datasets
from datasets.utils.continual_dataset import ContinualDataset
from datasets.utils.synthetic_world import ALL_DOMAINS
from utils.errors import UserError
from utils.run_options import RunOptions


class ToyDataset(ContinualDataset):
    """Unequal tasks; class ``c`` has ``c + 1`` images whose pixels all equal ``c``."""
    NAME = ""                       # not registered
    N_TASKS = 3
    N_CLASSES_PER_TASK = [3, 5, 2]

    def native_class_names(self):
        return [f"class {c}" for c in range(10)]

    def load_split(self, split):
        labels = torch.cat([torch.full((c + 1,), c) for c in range(10)])
        return labels.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8).contiguous(), labels


class ToySequence(ToyDataset):
    """The same data seen as a sequence of three different datasets."""
    PERMUTE_WITHIN_TASKS = True

    def task_templates(self, task):
        return (f"a photo from dataset {task}: {{}}.",)


def args(**kw):
    return replace(RunOptions(), **kw)


def test_unequal_offsets_and_task_data():
    ds = ToyDataset(args())
    assert [ds.get_offsets(t) for t in range(3)] == [(0, 3), (3, 8), (8, 10)]
    assert ds.task_of_label(torch.tensor([0, 2, 3, 7, 8, 9])).tolist() == [0, 0, 1, 1, 2, 2]
    data = ds.task_data(1, "train")
    assert sorted(set(data.labels.tolist())) == [3, 4, 5, 6, 7]
    assert len(data) == sum(c + 1 for c in range(3, 8))


@pytest.mark.parametrize("cls", [ToyDataset, ToySequence])
def test_random_order_is_seeded_and_names_follow_labels(cls):
    a, b, c = cls(args(class_order="random", seed=1)), cls(args(class_order="random", seed=1)), \
        cls(args(class_order="random", seed=2))
    assert a.class_order.tolist() == b.class_order.tolist() != c.class_order.tolist()
    assert sorted(a.class_order.tolist()) == list(range(10))
    images, labels = a.split("train")
    # pixel value = native class; the run label l must name native class class_order[l]
    native = images[:, 0, 0, 0].long()
    assert torch.equal(torch.as_tensor(a.class_order)[labels], native)
    assert [a.class_names[l] for l in labels.tolist()] == [f"class {n}" for n in native.tolist()]


def test_seed1993_run_is_clap4clips_order_per_run():
    """CLAP4CLIP's load_class_order: np.random.seed(1993 + num_run); np.random.shuffle(arange(C)); its run is --seed
    (the README command's --num-run 10 is --seed 10), run 0 is the classic seed1993 order."""
    def original(run):
        state = np.random.get_state()
        np.random.seed(1993 + run)
        labels = np.arange(10, dtype=int)
        np.random.shuffle(labels)
        np.random.set_state(state)
        return labels.tolist()
    for seed in (0, 1, 10):
        assert ToyDataset(args(class_order="seed1993_run", seed=seed)).class_order.tolist() == original(seed)
    assert original(0) == ToyDataset(args(class_order="seed1993")).class_order.tolist() != original(1)
    with pytest.raises(UserError, match="seed1993_run permutes all classes"):
        ToySequence.refuse_global_class_order(args(class_order="seed1993_run"))


def test_sequences_never_move_classes_between_tasks():
    for seed in range(5):
        ds = ToySequence(args(class_order="random", seed=seed))
        for t in range(3):
            lo, hi = ds.get_offsets(t)
            assert sorted(ds.class_order[lo:hi].tolist()) == list(range(lo, hi))
    assert ToySequence(args()).task_templates(2) == ("a photo from dataset 2: {}.",)


def test_class_order_from_file(tmp_path):
    order_file = tmp_path / "order.txt"
    order_file.write_text("# my order\n9\n8\nclass 7\n" + "\n".join(str(i) for i in range(7)) + "\n")
    ds = ToyDataset(args(class_order=str(order_file)))
    assert ds.class_order.tolist() == [9, 8, 7, 0, 1, 2, 3, 4, 5, 6]
    assert ds.class_names[:3] == ["class 9", "class 8", "class 7"]
    order_file.write_text("0\n1\n")
    with pytest.raises(UserError, match="exactly once"):
        ToyDataset(args(class_order=str(order_file)))
    with pytest.raises(UserError, match="not 'native', 'random' or an existing file"):
        ToyDataset(args(class_order=str(tmp_path / "missing.txt")))


def test_seq_synth_is_registered_and_consistent():
    assert "seq-synth" in list_datasets()
    ds = get_dataset_class("seq-synth")(args(class_order="random", seed=3))
    assert ds.n_classes == 100 and ds.N_TASKS == 10
    assert len(set(ds.class_names)) == 100
    world_names = [ds.world.concepts[i].name for i in ds.concept_ids]
    assert ds.class_names == [world_names[i] for i in ds.class_order]
    test = ds.task_data(4, "test")
    lo, hi = ds.get_offsets(4)
    assert len(test) == 10 * ds.options.synth_test_per_class
    assert int(test.labels.min()) == lo and int(test.labels.max()) == hi - 1
    batch = next(test.batches(8))
    assert batch["inputs"].dtype == torch.float32 and batch["inputs"].shape == (8, 3, 32, 32)
    assert float(batch["not_aug_inputs"].min()) >= 0 and float(batch["not_aug_inputs"].max()) <= 1
    assert np.isclose(float(batch["inputs"].mean()), float(((batch["not_aug_inputs"] - 0.5) / 0.25).mean()))


def test_seq_synth_labels_without_rendering():
    cls = get_dataset_class("seq-synth")
    ds = cls(args(class_order="random", seed=5), cls.Options(synth_train_per_class=7, synth_test_per_class=3))
    labels = ds.split_labels("test")
    assert "test" not in ds._splits                       # nothing was rendered
    assert torch.equal(labels, ds.split("test")[1])


@pytest.mark.parametrize("n_tasks", [1, 5, 20])
def test_seq_synth_task_count(n_tasks):
    """--synth_tasks splits the same 100 classes in equal tasks; 1 is joint training."""
    cls = get_dataset_class("seq-synth")
    ds = cls(args(class_order="random", seed=3),
             cls.Options(synth_train_per_class=2, synth_test_per_class=1, synth_tasks=n_tasks))
    assert ds.N_TASKS == n_tasks and ds.n_classes == 100
    assert ds.get_offsets(n_tasks - 1) == (100 - 100 // n_tasks, 100)
    ten = cls(args(class_order="random", seed=3), cls.Options(synth_train_per_class=2, synth_test_per_class=1))
    assert ds.class_names == ten.class_names               # same classes, same order: only the split differs
    assert torch.equal(ds.task_data(n_tasks - 1, "test").labels.unique(), torch.arange(100 - 100 // n_tasks, 100))


def test_seq_synth_one_domain_by_name():
    """--synth_domains neon: every image in that one look (the same images as the world renders in it), which
    separates learning a new style from learning a mixture of styles."""
    cls = get_dataset_class("seq-synth")
    ds = cls(args(class_order="random", seed=3), cls.Options(synth_train_per_class=2, synth_test_per_class=2,
                                                           synth_domains="neon"))
    images, labels = ds.split("test")
    ref, _, domains = ds.world.make_split(ds.concept_ids, 2, "test", domains=("neon",))
    assert torch.equal(images, ref)
    assert set(domains.tolist()) == {ALL_DOMAINS.index("neon")}
    allimg, _ = cls(args(class_order="random", seed=3),
                    cls.Options(synth_train_per_class=2, synth_test_per_class=2)).split("test")
    assert not torch.equal(images, allimg)


def test_seq_synth_unknown_domain_is_a_one_line_error(main_runner):
    out = main_runner(["--model", "zeroshot-clip", "--dataset", "seq-synth", "--synth_domains", "neonn"])
    assert out.returncode == 2 and "Did you mean 'neon'?" in out.stderr and "Traceback" not in out.stderr
