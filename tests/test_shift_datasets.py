"""The distribution-shift sets on tiny native-format fakes (tests/fakes/shift_datasets.py): ImageNet-A/-R/-Sketch/-V2
class folders, ObjectNet's mappings and border, the video sets' pm-k, the wilds adapter (on a stand-in with wilds'
API: wilds is optional and not installed here), ``--eval_only`` without ``--load``, and ``--eval_datasets`` as
never-trained columns of a ZSCL-family run that the leaderboard ranks by."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_main
from datasets import get_dataset_class
from datasets.utils.shift_sources import project_imagenet_logits
from fakes.imagenet_family import IMAGENET_R_WNIDS, IMAGENET_WNIDS, decode
from fakes.shift_datasets import (A_CLASSES, CLASSES, OBJECTNET, FakeWildsDataset, install_fake_wilds, write_all,
                                  write_iwildcam_names)
from utils.errors import UserError
from utils.eval_modes import resolve_eval_dataset
from utils.run_options import RunOptions

pytestmark = pytest.mark.filterwarnings("ignore:.*--verify_data 0:UserWarning")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("shift"))


def build(name, root, **kw):
    kw = {"download": False, "num_workers": 0, "verify_data": False, **kw}
    args = replace(RunOptions(), data_path=str(root), **kw)
    return get_dataset_class(name)(args)


def imagenet_codes(ds):
    images, labels = ds.split("test")
    return [decode(images.image(i)) for i in range(len(images))], labels.tolist()


@pytest.mark.parametrize("name, classes", [("imagenet-a", A_CLASSES), ("imagenet-sketch", CLASSES),
                                           ("imagenet-v2", CLASSES), ("imagenet", CLASSES)])
def test_imagenet_variants_labels_names_and_class_subsets(root, name, classes):
    ds = build(name, root)
    assert ds.N_TASKS == 1 and ds.n_classes == len(classes) and len(ds.task_templates(0)) == 80
    if name != "imagenet":                                           # WiSE-FT's class_sublist, in label order
        assert ds.imagenet_groups() == [[c] for c in classes]
    from datasets.utils.imagenet import clip_imagenet_names
    assert ds.class_names == [clip_imagenet_names()[IMAGENET_WNIDS[c]] for c in classes]
    codes, labels = imagenet_codes(ds)                              # every image has its class's label
    assert codes == [classes[y] for y in labels] and len(codes) == 2 * len(classes)


def test_imagenet_r_is_the_whole_set_with_clips_names(root):
    ds = build("imagenet-r", root)
    from datasets.utils.imagenet import clip_imagenet_names
    assert ds.class_names == [clip_imagenet_names()[w] for w in IMAGENET_R_WNIDS[:4]]
    codes, labels = imagenet_codes(ds)
    assert codes == [IMAGENET_WNIDS.index(IMAGENET_R_WNIDS[y]) for y in labels]
    with pytest.raises(UserError, match="has a test set only"):
        ds.split("train")


def test_wiseft_projection_masks_and_max_pools():
    logits = torch.randn(5, 1000)
    assert torch.equal(project_imagenet_logits(logits, [[c] for c in A_CLASSES]), logits[:, A_CLASSES])
    pooled = project_imagenet_logits(logits, [[11, 13], [6]])
    assert torch.equal(pooled[:, 0], logits[:, [11, 13]].amax(1)) and torch.equal(pooled[:, 1], logits[:, 6])


def test_objectnet_mapped_classes_names_groups_and_border(root, tmp_path):
    ds = build("objectnet", root)
    folders = sorted(OBJECTNET)
    assert ds.class_names == [OBJECTNET[f][0].lower() for f in folders]          # the unmapped folder is left out
    assert ds.imagenet_groups() == [OBJECTNET[f][1] for f in folders]            # through the 2012-id permutation
    images, labels = ds.split("test")
    first = images.image(0)
    assert first.size == (8, 8) and first.getpixel((1, 1)) != (255, 0, 0)         # 2 pixels cropped on each side
    assert [decode(images.image(i)) for i in range(len(images))] == [OBJECTNET[folders[y]][1][0] for y in labels]
    with pytest.raises(UserError, match=r"objectnet-1.0/images' is missing.*objectnet.dev/download"):
        build("objectnet", tmp_path)
    from datasets.reference import create_reference_images            # --ref_dataset objectnet: cropped images
    ref = create_reference_images("objectnet", root, n=4, seed=1)
    assert len(ref) == 4 and ref.images.image(0).size == (8, 8) and ref.describe()["fingerprint"] != \
        create_reference_images("objectnet", root, n=4, seed=2).describe()["fingerprint"]


def test_vid_robust_and_ytbb_pmk(root):
    vid = build("imagenet-vid-robust", root)
    assert vid.n_classes == 30 and vid.class_names[:3] == ["airplane", "antelope", "bear"]
    assert vid.imagenet_groups()[1] == [1, 6]
    _, labels = vid.split("test")
    assert labels.tolist() == [0, 0, 0, 2, 2, 2]
    assert vid.eval_metrics(np.array([0, 0, 0, 2, 2, 2]))["pm10"] == 100.0
    m = vid.eval_metrics(np.array([0, 0, 5, 1, 1, 1]))     # anchor 1: a neighbour wrong; anchor 2: its 2nd label
    assert (m["pm0"], m["pm10"]) == (100.0, 50.0)

    yt = build("ytbb-robust", root)
    src = yt.source
    assert set(src.anchor_labels) == {"vidA_1000/frame-15.jpg", "vidB_2000/frame-30.jpg"}    # bad and unsure out
    assert src.anchor_labels["vidA_1000/frame-15.jpg"] == {19, 23}       # "dog" and CSV 22 read as 23 (car)
    assert src.pm_frames["vidA_1000/frame-15.jpg"] == ["vidA_1000/frame-14.jpg", "vidA_1000/frame-25.jpg"]
    keys = src.keys
    right = np.array([19 if k.startswith("vidA") else 1 for k in keys])
    assert yt.eval_metrics(right) == {"pm0": 100.0, "pm10": 100.0, "n_anchors": 2}
    wrong = right.copy()
    wrong[keys.index("vidA_1000/frame-25.jpg")] = 0
    assert yt.eval_metrics(wrong)["pm10"] == 50.0 and yt.eval_metrics(wrong)["pm0"] == 100.0
    logits = torch.zeros(2, 24)
    logits[:, 22] = 5.0
    assert (yt.project_logits(logits).argmax(1) != 22).all()            # "none" is never predicted


def test_wilds_missing_is_one_line(root, tmp_path):
    try:
        import wilds  # noqa: F401
        pytest.skip("wilds is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"optional 'wilds' package, which is not installed: pip install wilds"):
        build("fmow", root)
    result = run_main(["--eval_only", "--eval_datasets", "iwildcam", "--data_path", str(root), "--quiet", "1"],
                      tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "pip install wilds" in result.stderr


def test_wilds_adapter_on_the_wilds_api(root, monkeypatch, tmp_path):
    fake = FakeWildsDataset()
    calls = install_fake_wilds(monkeypatch, fake)
    fmow = build("fmow", tmp_path, download=True)
    assert calls[-1] == {"dataset": "fmow", "root_dir": str(tmp_path), "download": True}
    assert fmow.class_names == [f"category_{i}" for i in range(4)]
    images, labels = fmow.split("test")
    assert torch.equal(labels, fake.y[16:]) and images.image(0).getpixel((0, 0))[0] == int(fake.y[16])
    assert torch.equal(fmow.split("train")[1], fake.y[:8])
    preds = fake.y[16:].numpy().copy()
    preds[:3] = (preds[:3] + 1) % 4
    m = fmow.eval_metrics(preds)
    y_pred, y_true, meta = fake.calls[-1]
    assert torch.equal(y_pred, torch.as_tensor(preds)) and torch.equal(y_true, fake.y[16:]) and \
        torch.equal(meta, fake.metadata[16:])                      # wilds' eval gets the test subset, in order
    assert m["acc_avg"] == pytest.approx(100 * 5 / 8) and m["acc_worst_region"] <= m["acc_avg"]
    write_iwildcam_names(tmp_path)
    cam = build("iwildcam", tmp_path)
    assert cam.class_names == [f"english {i}" for i in range(4)] and cam.task_templates(0)[1] == "{} in the wild."
    assert set(cam.eval_metrics(fake.y[16:].numpy())) == {"acc_avg", "recall_macro", "f1_macro"}


def test_framework_names_resolve():
    for name, expected in (("ImageNetA", "imagenet-a"), ("ImageNetSketch", "imagenet-sketch"), ("YTBB", "ytbb-robust"),
                           ("ImageNetVidRobust", "imagenet-vid-robust"), ("FMOW", "fmow"), ("IWildCam", "iwildcam"),
                           ("ImageNetV2", "imagenet-v2"), ("ObjectNet", "objectnet")):
        assert resolve_eval_dataset(name)[2] == expected


def test_eval_only_without_load_records_one_accuracy_per_dataset(root, tmp_path):
    names = ["ImageNetA", "YTBB"]
    result = run_main(["--model", "zeroshot-clip", "--backbone", "micro-clip", "--eval_only", "1", "--eval_datasets",
                       ",".join(names), "--data_path", str(root), "--verify_data", "0", "--num_workers", "0",
                       "--quiet", "1", "--feature_cache", str(tmp_path / "cache")], tmp_path)
    assert result.returncode == 0, result.stderr
    path = next((tmp_path / "results" / "eval-only").glob("*/*/results.json"))
    res = json.loads(path.read_text())
    assert res["status"] == "evaluated" and res["load"] is None
    assert list(res["datasets"]) == ["imagenet-a", "ytbb-robust"]
    for label, entry in res["datasets"].items():
        assert 0.0 <= entry["top1"] <= 100.0 and f"\n{label} " in "\n" + result.stdout
    yt = res["datasets"]["ytbb-robust"]
    assert yt["pm10"] <= yt["pm0"] and yt["n_anchors"] == 2 and yt["tasks"]["ytbb-robust"]["n_test"] == 5


FT = ["--model", "finetune", "--dataset", "synth-mtil", "--synth_train_per_class", "4", "--synth_test_per_class", "3",
      "--train_mode", "fc", "--lr", "0.5", "--n_iters", "4", "--batch_size", "8", "--warmup_iters", "1",
      "--stop_after", "2", "--quiet", "1", "--num_workers", "0", "--verify_data", "0"]


def test_eval_dataset_columns_never_train_and_rank_the_leaderboard(root, tmp_path):
    cache = ["--feature_cache", str(tmp_path / "cache"), "--data_path", str(root)]
    plain = run_main([*FT, *cache, "--results_path", str(tmp_path / "a")], tmp_path)
    cols = run_main([*FT, *cache, "--results_path", str(tmp_path / "b"), "--eval_datasets", "shapes,imagenet-a"],
                    tmp_path)
    assert plain.returncode == 0 and cols.returncode == 0, cols.stderr
    a, b = (json.loads(next((tmp_path / d).glob("*/*/*/results.json")).read_text()) for d in "ab")
    assert a["accuracy_matrix"] == b["accuracy_matrix"]               # the columns change nothing of the run
    steps = b["eval_datasets"]["steps"]
    assert len(steps) == 2 and set(steps[0]) == {"shapes", "imagenet-a"}
    zero = b["eval_datasets"]["zero_shot"]["shapes"]["top1"]
    m = b["metrics"]["eval_datasets"]
    assert m["shapes"]["top1"] == steps[1]["shapes"]["top1"] and m["shapes"]["top1_zero_shot"] == zero
    assert m["shapes"]["top1_avg"] == pytest.approx((steps[0]["shapes"]["top1"] + steps[1]["shapes"]["top1"]) / 2)
    assert "imagenet-a: top-1" in cols.stdout
    board = run_main_script(["scripts/leaderboard.py", str(tmp_path / "b"), "--metric",
                             "eval_datasets.shapes.top1", "eval_datasets.imagenet-a.top1", "--include-incomplete"])
    row = next(line for line in board.splitlines() if line.startswith("| 1 |"))
    assert f"{m['shapes']['top1']:.2f}" in row and f"{m['imagenet-a']['top1']:.2f}" in row


def run_main_script(argv):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, *argv], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout
