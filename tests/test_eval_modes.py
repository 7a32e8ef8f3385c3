"""The MTIL framework's evaluation modes and model files (utils/eval_modes.py, utils/model_files.py): --save_models
exports each task's CLIP as a plain open_clip state_dict that --load reads back (in training and with --eval_only)
to the same accuracies; --eval_interval writes metrics_<task>.csv; --eval_single prints the top-5 classes of a PNG;
OpenAI-style TorchScript archives load without running their code; mismatched files and bad input are one-line
errors (exit 2); the seed's flag spellings are aliases; scripts/list_clip_layers.py lists layers."""
from __future__ import annotations

import csv
import io
import json
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import main as tusk_main
from backbone.micro_clip import WEIGHTS_PATH, create_micro_clip
from models import get_model_class, list_models
from utils.atomic import load_torch
from utils.config import parse_config
from utils.errors import UserError
from utils.model_files import read_state_dict
from utils.options import FLAG_ALIASES, canonical_flags, field_names
from utils.run_options import RunOptions

#: synth-mtil at its smallest: 4 training and 3 test images per class, two tasks (counting: 9 classes, icons: 20)
SYNTH = ["--dataset", "synth-mtil", "--synth_train_per_class", "4", "--synth_test_per_class", "3"]
TRAIN = ["--model", "finetune", *SYNTH, "--n_iters", "4", "--batch_size", "8", "--warmup_iters", "1", "--lr", "1e-4",
         "--eval_future", "1", "--stop_after", "2", "--quiet", "1"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = tusk_main.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def newest_run(root: Path) -> Path:
    return max((p for p in root.glob("*/*/*") if p.is_dir()), key=lambda p: p.name)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    """A finetune run of two synth-mtil tasks with --save_models and --eval_interval 2 (hyphenated, as the seed)."""
    root = tmp_path_factory.mktemp("train")
    code = tusk_main.main([*TRAIN, "--save-models", "--eval-interval", "2", "--results_path", str(root),
                           "--feature_cache", cache])
    assert code == 0
    run_dir = newest_run(root)
    return run_dir, json.loads((run_dir / "results.json").read_text())


# ---- --save_models, --load, --eval_only ------------------------------------------------------------------
def test_save_models_writes_each_tasks_clip_as_a_plain_open_clip_state_dict(trained):
    run_dir, _ = trained
    files = sorted(p.name for p in run_dir.glob("model_task*.pt"))
    assert files == ["model_task01_counting.pt", "model_task02_icons.pt"]
    state = load_torch(run_dir / files[-1])                  # weights_only=True: tensors only
    assert set(state) == set(create_micro_clip().state_dict())
    # the exported file is the CLIP after task 2, bit for bit the one in the run's checkpoint
    checkpoint = load_torch(run_dir / "checkpoint.pt")["model"]["model"]
    assert all(torch.equal(v, checkpoint[f"net.model.{k}"]) for k, v in state.items())
    assert not torch.equal(state["visual.conv1.weight"], create_micro_clip().state_dict()["visual.conv1.weight"])


def test_eval_only_on_an_exported_file_gives_the_runs_accuracies(trained, tmp_path, capsys, cache):
    """The file of task 2 scores every synth-mtil dataset as the run did after task 2 (row 2 of its matrices)."""
    run_dir, results = trained
    code, out, err = run(["--eval_only", "1", "--load", str(run_dir / "model_task02_icons.pt"),
                          "--eval_datasets", "synth-mtil", "--synth_test_per_class", "3",
                          "--results_path", str(tmp_path), "--feature_cache", cache], capsys)
    assert code == 0, err
    ev_dir = newest_run(tmp_path)
    assert ev_dir.parent.parent.name == "eval-only"
    assert {"config.json", "log.jsonl", "results.json", "eval_results.csv"} <= {p.name for p in ev_dir.iterdir()}
    entry = json.loads((ev_dir / "results.json").read_text())["datasets"]["synth-mtil"]
    row, row5 = results["accuracy_matrix"]["task_il"][1], results["top5_matrix"]["task_il"][1]
    assert [t["top1"] for t in entry["tasks"].values()] == pytest.approx(row, abs=1e-9)
    assert [t["top5"] for t in entry["tasks"].values()] == pytest.approx(row5, abs=1e-9)
    assert entry["top1"] == pytest.approx(sum(row) / len(row))
    lines = list(csv.reader(io.StringIO((ev_dir / "eval_results.csv").read_text())))
    assert lines[0] == ["dataset", "top1", "top5"] and lines[1][0] == "synth-mtil" and len(lines) == 9
    assert "synth-mtil/icons" in out
    code, _, err = run(["--resume", str(ev_dir)], capsys)
    assert code == 2 and "is an --eval_only evaluation" in err


def test_eval_only_on_one_dataset_of_a_sequence(trained, tmp_path, capsys, cache):
    run_dir, results = trained
    code, _, err = run(["--eval-only", "--load", str(run_dir / "model_task02_icons.pt"), "--eval-datasets",
                        "shapes,Icons", "--synth_test_per_class", "3", "--results_path", str(tmp_path),
                        "--feature_cache", cache, "--quiet"], capsys)
    assert code == 0, err
    datasets = json.loads((newest_run(tmp_path) / "results.json").read_text())["datasets"]
    order = ["counting", "icons", "scenes", "shades", "shapes", "styles", "textures"]     # synth-mtil's order I
    row = results["accuracy_matrix"]["task_il"][1]
    assert datasets["shapes"]["top1"] == pytest.approx(row[order.index("shapes")])
    assert datasets["icons"]["top1"] == pytest.approx(row[order.index("icons")])


def test_eval_only_on_datasets_of_mtil_by_the_frameworks_names(tmp_path, capsys):
    """One MTIL dataset alone (its native-format fakes), named as the framework names them."""
    from test_datasets_mtil import write_mtil_fakes
    root = write_mtil_fakes(tmp_path / "data", full=False)
    code, _, err = run(["--eval_only", "--load", str(WEIGHTS_PATH), "--eval_datasets", "DTD,mnist", "--data_path",
                        str(root), "--verify_data", "0", "--download", "0", "--num_workers", "0", "--quiet",
                        "--results_path", str(tmp_path / "results"), "--feature_cache", "off"], capsys)
    assert code == 0, err
    datasets = json.loads((newest_run(tmp_path / "results") / "results.json").read_text())["datasets"]
    assert list(datasets) == ["DTD", "MNIST"]
    assert (datasets["DTD"]["n_classes"], datasets["MNIST"]["n_classes"]) == (47, 10)
    assert all(0 <= d["top1"] <= 100 and d["setting"] == "task-il" for d in datasets.values())


def test_training_from_load_starts_from_the_file(trained, tmp_path, capsys, cache):
    """zero-shot CLIP with --load FILE scores exactly as the model that wrote FILE."""
    run_dir, results = trained
    code, _, err = run(["--model", "zeroshot-clip", *SYNTH, "--load", str(run_dir / "model_task01_counting.pt"),
                        "--eval_future", "1", "--stop_after", "1", "--quiet", "1", "--results_path", str(tmp_path),
                        "--feature_cache", cache], capsys)
    assert code == 0, err
    loaded = json.loads((newest_run(tmp_path) / "results.json").read_text())
    assert loaded["accuracy_matrix"]["task_il"][0] == pytest.approx(results["accuracy_matrix"]["task_il"][0])


# ---- --eval_interval ---------------------------------------------------------------------------------------
def test_eval_interval_writes_iteration_top1_top5_rows_per_task(trained):
    run_dir, results = trained
    for task, name in enumerate(("counting", "icons")):
        rows = list(csv.DictReader(io.StringIO((run_dir / f"metrics_{name}.csv").read_text())))
        assert [int(r["iteration"]) for r in rows] == [0, 2, 4]
        # the last row is the model the task ends with: the run's own evaluation of that task
        assert float(rows[-1]["top1"]) == pytest.approx(results["accuracy_matrix"]["task_il"][task][task], abs=1e-4)
        assert float(rows[-1]["top5"]) == pytest.approx(results["top5_matrix"]["task_il"][task][task], abs=1e-4)
    # iteration 0 of task 1 is zero-shot CLIP on it
    first = list(csv.DictReader(io.StringIO((run_dir / "metrics_counting.csv").read_text())))[0]
    assert float(first["top1"]) == pytest.approx(results["zero_shot_accuracy"]["task_il"][0], abs=1e-4)


def test_eval_interval_leaves_the_training_unchanged(trained, tmp_path, capsys, cache):
    _, results = trained
    code, _, err = run([*TRAIN, "--results_path", str(tmp_path), "--feature_cache", cache], capsys)
    assert code == 0, err
    plain = json.loads((newest_run(tmp_path) / "results.json").read_text())
    assert plain["accuracy_matrix"] == results["accuracy_matrix"]


# ---- --eval_single ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def png(tmp_path_factory):
    """A synth-mtil 'shapes' test image (a triangle) as a PNG, and the shapes class names file."""
    from PIL import Image

    from datasets.utils.synthetic_tasks import SYNTH_TASKS, make_task_split
    from datasets.utils.synthetic_world import SyntheticWorld
    folder = tmp_path_factory.mktemp("single")
    task = SYNTH_TASKS["shapes"]
    images, labels = make_task_split(SyntheticWorld(seed=0, image_size=32), task, 1, "test")
    k = list(task.class_names).index("triangle")
    Image.fromarray(images[k].permute(1, 2, 0).numpy()).save(folder / "triangle.png")
    (folder / "names.txt").write_text("\n".join(task.class_names) + "\n")
    return folder / "triangle.png", folder / "names.txt", list(task.class_names)


def test_eval_single_prints_the_top5_classes_with_probabilities(png, capsys):
    image, names_file, names = png
    code, out, err = run(["--eval_only", "1", "--load", str(WEIGHTS_PATH), "--backbone", "micro-clip",
                          "--eval-single", str(image), "--class-names", str(names_file)], capsys)
    assert code == 0, err
    ranked = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(ranked) == 5
    classes = [line.split(". ", 1)[1].rsplit(None, 2)[0].strip() for line in ranked]
    probs = [float(line.rsplit(None, 2)[1]) for line in ranked]
    assert set(classes) <= set(names) and len(set(classes)) == 5
    assert probs == sorted(probs, reverse=True) and 0 <= sum(probs) <= 100.01
    assert classes[0] == "triangle"           # micro-clip knows its shapes (93 % zero-shot on synth-mtil's)


# ---- model files ----------------------------------------------------------------------------------------------
def test_openai_style_torchscript_archives_load_without_running_code(tmp_path):
    model = create_micro_clip()
    traced = torch.jit.trace(model, (torch.zeros(1, 3, 32, 32), torch.zeros(1, 16, dtype=torch.long)),
                             check_trace=False)
    path = tmp_path / "micro-clip-torchscript.pt"
    torch.jit.save(traced, str(path))
    with pytest.raises(RuntimeError):                        # what torch.load(weights_only=True) does with it
        torch.load(path, weights_only=True)
    state = read_state_dict(path)
    assert set(state) == set(traced.state_dict())            # what torch.jit.load(path).state_dict() gives
    from backbone.clip import create_clip
    clip = create_clip("micro-clip", load=str(path))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in clip.model.state_dict().items())
    from backbone.clip import ClipOptions          # --pretrained FILE reads the archive the same way
    clip = create_clip("micro-clip", ClipOptions(pretrained=str(path)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in clip.model.state_dict().items())
    assert clip.weights_id.startswith("file-sha256:")

    # an archive whose pickle calls a function is refused, and the function never runs
    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('%s').touch()" % (tmp_path / "ran"),))
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.namelist():
            data = pickle.dumps(Evil(), protocol=2) if item.endswith("/data.pkl") else src.read(item)
            dst.writestr(item, data)
    with pytest.raises(UserError, match="exec"):
        read_state_dict(evil)
    assert not (tmp_path / "ran").exists()


def test_open_clip_checkpoint_layouts_load(tmp_path):
    from backbone.clip import create_clip
    state = create_micro_clip().state_dict()
    wrapped = tmp_path / "epoch_1.pt"              # open_clip's training checkpoints, with DataParallel's prefix
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    clip = create_clip("micro-clip", load=str(wrapped))
    assert clip.weights_id.startswith("file-sha256:")
    assert all(torch.equal(v, state[k]) for k, v in clip.model.state_dict().items())


def test_load_for_a_network_that_is_not_clip(tmp_path):
    from backbone import create_backbone
    net = create_backbone("small-cnn", 10)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    dataset = SimpleNamespace(n_classes=10)
    loaded = get_model_class("sgd").create_backbone("small-cnn", dataset, None, load=str(tmp_path / "net.pt"))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(UserError, match="net.pt does not fit --backbone small-cnn with 20 classes: shape"):
        get_model_class("sgd").create_backbone("small-cnn", SimpleNamespace(n_classes=20), None,
                                               load=str(tmp_path / "net.pt"))


# ---- errors: one line, exit 2 -----------------------------------------------------------------------------
def test_a_mismatched_file_names_the_file_and_the_first_mismatching_keys(tmp_path, capsys):
    state = create_micro_clip().state_dict()
    del state["ln_final.weight"]
    state["text_projection"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    code, _, err = run(["--eval_only", "1", "--load", str(path), "--eval_datasets", "shapes"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err and "missing: ln_final.weight" in err and "unexpected: extra.weight" in err
    assert "text_projection [3, 3] vs [128, 128]" in err


@pytest.fixture
def bad_inputs(tmp_path, png):
    image, names_file, _ = png
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "twice.txt").write_text("circle\nsquare\ncircle\n")
    (tmp_path / "notes.txt").write_text("not an image")
    torch.save({"format": 1, "completed_tasks": 1, "model": {}}, tmp_path / "checkpoint.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "list.pt")
    return SimpleNamespace(image=str(image), names=str(names_file), dir=tmp_path)


@pytest.mark.parametrize("case, expected", [
    ("missing_load", "--load: no such model file"),
    ("single_without_eval_only", "--eval_single is an evaluation-only flag"),
    ("class_names_without_single", "--eval_single IMAGE and --class_names FILE go together"),
    ("empty_class_names", "no class names"),
    ("class_listed_twice", "'circle' is listed twice"),
    ("missing_class_names", "--class_names: no such file"),
    ("missing_image", "--eval_single: no such image file"),
    ("not_an_image", "not an image PIL can read"),
    ("a_run_checkpoint", "a run's checkpoint (for --resume), not a model file"),
    ("not_a_state_dict", "not a state_dict"),
    ("no_dataset", "--eval_only needs the datasets to evaluate"),
    ("unknown_dataset", "unknown evaluation dataset 'nosuch'"),
    ("single_and_datasets", "drop --dataset/--eval_datasets"),
    ("single_with_a_non_clip_model", "--eval_single needs a CLIP method"),
    ("save_models_with_eval_only", "--save_models does not apply to --eval_only"),
])
def test_bad_input_is_one_line_and_exit_2(case, expected, bad_inputs, capsys):
    b = bad_inputs
    load, single = ["--load", str(WEIGHTS_PATH)], ["--eval_single", b.image, "--class_names", b.names]
    argv = {
        "missing_load": ["--eval_only", "--load", str(b.dir / "nosuch.pt"), *single],
        "single_without_eval_only": [*load, *single],
        "class_names_without_single": ["--eval_only", *load, "--class_names", b.names],
        "empty_class_names": ["--eval_only", *load, "--eval_single", b.image, "--class_names", str(b.dir / "empty.txt")],
        "class_listed_twice": ["--eval_only", *load, "--eval_single", b.image, "--class_names",
                               str(b.dir / "twice.txt")],
        "missing_class_names": ["--eval_only", *load, "--eval_single", b.image, "--class_names",
                                str(b.dir / "none.txt")],
        "missing_image": ["--eval_only", *load, "--eval_single", str(b.dir / "none.png"), "--class_names", b.names],
        "not_an_image": ["--eval_only", *load, "--eval_single", str(b.dir / "notes.txt"), "--class_names", b.names],
        "a_run_checkpoint": ["--eval_only", "--load", str(b.dir / "checkpoint.pt"), *single],
        "not_a_state_dict": ["--eval_only", "--load", str(b.dir / "list.pt"), *single],
        "no_dataset": ["--eval_only", *load],
        "unknown_dataset": ["--eval_only", *load, "--eval_datasets", "nosuch"],
        "single_and_datasets": ["--eval_only", *load, *single, "--eval_datasets", "shapes"],
        "single_with_a_non_clip_model": ["--eval_only", *load, *single, "--model", "sgd", "--backbone", "small-cnn"],
        "save_models_with_eval_only": ["--eval_only", *load, "--eval_datasets", "shapes", "--save_models", "1"],
    }[case]
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and expected in err, err


# ---- aliases -----------------------------------------------------------------------------------------------
def test_the_seeds_flag_spellings_are_aliases():
    assert canonical_flags(["--iterations", "5", "--train-mode=image", "--eval-only", "--ctx_init", "a-b", "--",
                            "--x-y"]) == \
        ["--n_iters", "5", "--train_mode=image", "--eval_only", "--ctx_init", "a-b", "--", "--x-y"]
    config, _ = parse_config(["--model", "finetune", *SYNTH, "--iterations", "7", "--train-mode", "image",
                              "--ls", "0.2", "--batch-size", "4", "--eval-interval", "3", "--epochs", "2",
                              "--batch-size-eval", "16", "--data-location", "elsewhere", "--we", "--avg_freq", "5",
                              "--l2", "1", "--wise_merge"])
    run, method = config.run, config.method
    assert (run.n_iters, run.batch_size, run.eval_interval, run.n_epochs, run.eval_batch_size, run.data_path) == \
        (7, 4, 3, 2, 16, "elsewhere")
    assert (method.train_mode, method.ls, method.we, method.avg_freq, method.l2, method.wise_merge) == \
        ("image", 0.2, True, 5, 1.0, 0.8)
    assert config.argv[:2] == ["--model", "finetune"] and "--iterations" in config.argv    # as typed


#: the zscl options of issue 11, added with the method; until then their aliases have no target
PENDING = {"image_loss", "text_loss", "ref_dataset", "ref_sentences"}


def test_every_alias_names_an_option():
    known = set(field_names(RunOptions))
    for name in list_models():
        known |= set(field_names(get_model_class(name).Options))
    missing = {t for t in FLAG_ALIASES.values() if t not in known}
    assert not missing - PENDING, missing - PENDING
    if missing:
        pytest.xfail(f"alias targets not declared yet: {sorted(missing)}")


# ---- scripts/list_clip_layers.py ------------------------------------------------------------------------------
def test_list_clip_layers(capsys):
    from scripts.list_clip_layers import main as list_layers
    model = create_micro_clip()
    assert list_layers(["--backbone", "micro-clip", "--linear_only", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [line.split()[0] for line in lines] == linear and "512x128" in lines[1]
    assert list_layers(["--params"]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    shapes = {n: "x".join(map(str, p.shape)) or "scalar" for n, p in model.named_parameters()}
    assert {line.split()[0]: line.split()[2] for line in lines} == shapes
    assert list_layers(["--backbone", "nosuch"]) == 2
    assert "unknown CLIP backbone" in capsys.readouterr().err
