"""Leaderboards and plots from run directories: grouping, mean ± std, commands, speed, PNG files."""
import copy
import csv
import importlib.util
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_main
from utils.atomic import write_json
from utils.config import parse_config
from utils.reports import group_runs, load_runs
from utils.results import RunRecorder

TEMPLATE = parse_config(["--model", "sgd", "--dataset", "seq-synth"])[0].to_json()


def script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(root, model, seed, last, buffer_size=0, status="completed", n_tasks=3, tag=""):
    """A run directory as main.py writes it: every task at 80 % until the last row, which is at ``last``."""
    run_dir = root / "seq-synth" / model / f"{model}-{buffer_size}-{seed}{tag}"
    run_dir.mkdir(parents=True)
    config = copy.deepcopy(TEMPLATE)
    config["selection"]["model"] = model
    config["run"].update(seed=seed, buffer_size=buffer_size)
    config["argv"] = ["--model", model, "--dataset", "seq-synth", "--buffer_size", str(buffer_size),
                      "--seed", str(seed)]
    write_json(run_dir / "config.json", config)
    recorder = RunRecorder(run_dir, n_tasks, {"model": model, "dataset": "seq-synth", "backbone": "small-cnn",
                                              "seed": seed})
    for t in range(n_tasks):
        acc = {k: (last if t == n_tasks - 1 else 80.0) for k in range(t + 1)}
        recorder.add_row(acc, acc, 1.0, {"sizes": {k: 10 for k in range(t + 1)}})
    recorder.status = status
    recorder.write()
    return run_dir


@pytest.fixture
def fake_runs(tmp_path):
    fake_run(tmp_path, "sgd", 0, 60.0)
    fake_run(tmp_path, "sgd", 1, 70.0)
    fake_run(tmp_path, "sgd", 2, 0.0, status="interrupted")
    fake_run(tmp_path, "er", 0, 80.0, buffer_size=200)
    fake_run(tmp_path, "er", 1, 90.0, buffer_size=200)
    fake_run(tmp_path, "er", 0, 75.0, buffer_size=500)
    return tmp_path


def test_runs_are_grouped_by_setting_not_seed(fake_runs):
    groups = group_runs(load_runs([fake_runs]))
    assert [(g.model, g.label, g.seeds()) for g in groups] == [
        ("er", "buffer_size=200", [0, 1]), ("er", "buffer_size=500", [0]), ("sgd", "", [0, 1])]
    assert len(group_runs(load_runs([fake_runs], include_incomplete=True))[-1].runs) == 3
    # last accuracy of sgd: 60 and 70 -> mean 65, sample std sqrt((5^2 + 5^2) / (2 - 1)) = 7.071
    assert groups[-1].stats("last_accuracy") == pytest.approx((65.0, 50 ** 0.5, 2))
    # a run directory given directly counts once, even together with its root
    assert len(load_runs([fake_runs, next(fake_runs.glob("seq-synth/sgd/*"))], include_incomplete=True)) == 6


def test_an_option_older_runs_lack_does_not_split_them(fake_runs):
    old = next(fake_runs.glob("seq-synth/sgd/sgd-0-0"))
    config = json.loads((old / "config.json").read_text())
    del config["run"]["lr_scheduler"]                     # as if made before the option existed
    write_json(old / "config.json", config)
    sgd = [g for g in group_runs(load_runs([fake_runs])) if g.model == "sgd"]
    assert len(sgd) == 1 and sgd[0].seeds() == [0, 1] and sgd[0].label == ""


@pytest.mark.parametrize("group, key, value", [("method", "vga_context", "batch"), ("run", "ece_per_batch", True)])
def test_eval_batch_size_splits_runs_only_where_it_changes_the_numbers(tmp_path, group, key, value):
    """CLAP's batch-wide VGA context (and the per-batch ECE) depend on the evaluation batch: runs that differ in
    --eval_batch_size are then different settings; elsewhere the batch size cannot change results."""
    for seed, (batch, dependent) in enumerate([(32, False), (256, False), (32, True), (32, True), (256, True)]):
        run_dir = fake_run(tmp_path, "sgd", seed, 60.0)
        config = json.loads((run_dir / "config.json").read_text())
        config["run"]["eval_batch_size"] = batch
        config.setdefault(group, {})[key] = value if dependent else None
        write_json(run_dir / "config.json", config)
    groups = group_runs(load_runs([tmp_path]))
    assert sorted(len(g.runs) for g in groups) == [1, 2, 2]
    split = [g for g in groups if g.setting.get(key) == value]
    assert sorted(g.setting["eval_batch_size"] for g in split) == [32, 256]
    assert all("eval_batch_size" not in g.setting for g in groups if g not in split)


def test_leaderboard_markdown_and_csv(fake_runs, tmp_path, capsys):
    md_path, csv_path = tmp_path / "board.md", tmp_path / "board.csv"
    rc = script("leaderboard").main([str(fake_runs), "--metric", "last_accuracy", "forgetting",
                                     "--out-md", str(md_path), "--out-csv", str(csv_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert out == md_path.read_text()
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    # ranked by last accuracy: er/200 (80, 90: 85 ± 7.07), er/500 (75, one run), sgd (60, 70: 65 ± 7.07)
    assert "| er | small-cnn | buffer_size=200 | 0,1 | 85.00 ± 7.07 |" in rows[0]
    assert "| buffer_size=500 | 0 | 75.00 |" in rows[1]
    assert "| sgd | small-cnn | – | 0,1 | 65.00 ± 7.07 |" in rows[2]
    # forgetting of sgd: 80 - 60 = 20 and 80 - 70 = 10 -> 15 ± 7.07
    assert rows[2].endswith("| 15.00 ± 7.07 |")
    commands = out.split("Commands:")[1]
    assert "--buffer_size 200 --seed 0" in commands and "--buffer_size 200 --seed 1" in commands
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["model"] for r in table] == ["er", "er", "sgd"]
    assert float(table[0]["last_accuracy_mean"]) == pytest.approx(85.0)
    assert float(table[0]["last_accuracy_std"]) == pytest.approx(7.0711, abs=1e-4)
    assert table[1]["last_accuracy_std"] == "" and table[2]["n_runs"] == "2"
    assert table[2]["commands"].count("python main.py") == 2


def test_a_thousand_runs_in_seconds(tmp_path, capsys):
    for i in range(1000):       # 10 methods x 10 memory sizes x 10 seeds
        fake_run(tmp_path, f"m{i // 100}", i % 10, 50.0 + i % 7, buffer_size=100 * (i // 10 % 10 + 1), n_tasks=10)
    start = time.perf_counter()
    assert script("leaderboard").main([str(tmp_path), "--out-csv", str(tmp_path / "board.csv")]) == 0
    seconds = time.perf_counter() - start
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 100
    print(f"\nleaderboard of 1000 runs: {seconds:.2f} s")
    assert seconds < 10


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two real tiny seq-synth runs that differ only in their seed."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        proc = run_main(["--model", "sgd", "--dataset", "seq-synth", "--synth_train_per_class", "20",
                         "--synth_test_per_class", "10", "--quiet", "1", "--results_path", str(root),
                         "--seed", str(seed)], root)
        assert proc.returncode == 0, proc.stderr
    return root


def test_leaderboard_of_two_real_seeds(two_seeds):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "leaderboard.py"), str(two_seeds)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 1 |"))
    assert "| seq-synth | sgd | small-cnn |" in row and "| 0,1 |" in row and row.count(" ± ") == 5
    assert "--seed 0" in proc.stdout and "--seed 1" in proc.stdout


def test_plots_are_png_images(two_seeds, tmp_path):
    import matplotlib.image
    out = tmp_path / "plots"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_results.py"), str(two_seeds),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("heatmap.png", "curves.png", "reliability.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert np.ptp(image[..., :3]) > 0                   # not a blank canvas


def test_reports_say_what_is_wrong(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "leaderboard.py"), str(tmp_path / "nowhere")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_results.py"), str(tmp_path), "--out",
                           str(tmp_path / "p")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "no completed run" in proc.stderr


def test_a_mistyped_metric_is_named(fake_runs, capsys):
    assert script("leaderboard").main([str(fake_runs), "--metric", "last_acuracy"]) == 2
    assert "did you mean last_accuracy" in capsys.readouterr().err


def test_an_unreadable_run_is_skipped_with_a_warning(fake_runs):
    broken = next(fake_runs.glob("seq-synth/er/*"))
    (broken / "results.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipping"):
        runs = load_runs([fake_runs])
    assert len(runs) == 4


def test_interference_report_says_which_task_costs_which(tmp_path, capsys):
    """scripts/interference.py on two runs of three named tasks: the mean matrix's diagonal, last row, forgetting and
    the change each task's training makes to the earlier ones."""
    rows = {0: ([50.0], [40.0, 90.0], [30.0, 60.0, 70.0]), 1: ([60.0], [40.0, 80.0], [20.0, 70.0, 80.0])}
    for seed, matrix in rows.items():
        run_dir = tmp_path / f"run{seed}"
        run_dir.mkdir()
        config = copy.deepcopy(TEMPLATE)
        config["run"].update(seed=seed)
        write_json(run_dir / "config.json", config)
        recorder = RunRecorder(run_dir, 3, {"model": "finetune", "dataset": "synth-mtil", "backbone": "micro-clip",
                                            "seed": seed, "task_names": ["shades", "shapes", "styles"]})
        for row in matrix:
            acc = dict(enumerate(row))
            recorder.add_row(acc, acc, 1.0, {"sizes": {k: 10 for k in acc}})
        recorder.status = "completed"
        recorder.write()
    module = script("interference")
    assert module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # mean matrix: [55], [40, 85], [25, 65, 75]
    assert "seeds 0,1" in out and "shades" in out.splitlines()[1]
    assert out.splitlines()[2].split()[-3:] == ["55.0", "85.0", "75.0"]          # after its task
    assert out.splitlines()[3].split()[-3:] == ["25.0", "65.0", "75.0"]          # after the last
    assert "mean over all but the last task): 25.0" in out                        # (30 + 20) / 2
    assert "shapes   shades -15.0" in out and "shades -15.0  shapes -20.0" in out
    assert "largest costs: styles -> shapes -20.0, shapes -> shades -15.0, styles -> shades -15.0" in out
    assert module.main([str(tmp_path / "nothing-here")]) == 2
