"""scripts/reproduce.py: the tables' names, their exact commands (dry runs), and the report beside the reported
numbers on fake finished runs."""
from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import reproduce  # noqa: E402
from utils import sweep  # noqa: E402

NAMES = ["clap4clip-cifar100", "clap4clip-imagenet-r", "zscl-mtil-I", "zscl-mtil-II", "synth-mtil-I", "synth-mtil-II",
         "zscl-cifar100",
         "cgil-imagenet-r", "cgil-cars196", "cgil-cub200", "cgil-eurosat"]


def reproduce_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reproduce.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_list_names_every_table():
    code, out, _ = reproduce_main(["--list", 1])
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == NAMES
    code, _, err = reproduce_main(["zscl-mtil-3"])
    assert code == 2 and err.startswith("error: unknown table 'zscl-mtil-3'. Did you mean 'zscl-mtil-I'?")


def test_dry_runs_print_the_best_recipes_with_the_papers_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from utils.config import parse_config
    resolved = []           # the dry run resolves every command (sweep.validate): keep what it got
    monkeypatch.setattr(sweep, "validate", lambda argvs: resolved.append([parse_config(list(a))[0] for a in argvs]))
    seen = {}
    for name in NAMES + ["cgil-seq-cub200"]:
        code, out, err = reproduce_main([name, "--dry_run", 1, "--data_path", "DATA"])
        assert code == 0, err
        assert out.count("python main.py ") == len(out.splitlines()) == \
            sum(len(reproduce.tables()[name.replace("cgil-seq-", "cgil-")].seeds) for _ in
                reproduce.tables()[name.replace("cgil-seq-", "cgil-")].rows)
        assert all(f"--data_path DATA --seed " in line and line.endswith(
            f"--quiet 1 --results_path results/reproduce/{name.replace('cgil-seq-', 'cgil-')}")
            for line in out.splitlines())
        seen[name] = resolved[-1]
        assert [f"--seed {c.run.seed}" in line for c, line in zip(seen[name], out.splitlines())] == \
            [True] * len(seen[name])
    assert not (tmp_path / "results").exists()              # a dry run writes nothing
    clap = [c for c in seen["clap4clip-cifar100"] if c.model == "clap4clip"]
    assert sorted(c.run.seed for c in clap) == [0, 1, 2]
    assert {(c.backbone, c.run.buffer_size, c.run.class_order, c.sources["lr"]) for c in clap} == \
        {("ViT-B/16", 2000, "seed1993_run", "clap4clip.yaml:seq-cifar100")}
    (inr,) = {(c.run.buffer_per_class, c.data.imagenet_r_split) for c in seen["clap4clip-imagenet-r"]}
    assert inr == (20, "clap4clip")
    for order in ("I", "II"):
        mtil = seen[f"zscl-mtil-{order}"]
        assert [c.model for c in mtil] == ["zeroshot-clip", "finetune", "lwf-clip", "icarl-clip", "lwf-vr",
                                           "finetune", "zscl"]
        assert {c.data.mtil_order for c in mtil} == {order} and all(c.run.eval_future for c in mtil)
        assert all(c.backbone == "ViT-B/16" and c.run.n_iters == 1000 for c in mtil[1:])
        assert all(c.method.task_lr == ["aircraft=5e-5", "mnist=5e-5"] for c in mtil[1:])   # ZSCL's lr array
        wise = mtil[5]
        assert (wise.method.wise_merge, wise.method.wise_ft_model) == (0.8, "prev") and mtil[1].method.wise_merge is None
        assert mtil[6].method.we and not mtil[4].method.we
    for order in ("I", "II"):          # the same rows on synth-mtil: micro-clip, its 100-step recipes, seeds 0-2
        synth = seen[f"synth-mtil-{order}"]
        assert [c.model for c in synth[::3]] == ["zeroshot-clip", "finetune", "lwf-clip", "icarl-clip", "lwf-vr",
                                                 "finetune", "zscl"]
        assert [c.run.seed for c in synth] == [0, 1, 2] * 7 and {c.data.mtil_order for c in synth} == {order}
        assert all(c.backbone == "micro-clip" and c.run.eval_future for c in synth)
        assert all(c.run.n_iters == 100 and c.sources["n_iters"].endswith(":synth-mtil") for c in synth[3:])
        assert synth[15].method.wise_merge == 0.8 and synth[18].method.we and synth[18].method.l2 == 1.0
    assert sorted(c.data.cifar100_tasks for c in seen["zscl-cifar100"]) == [10, 20, 50]
    cgil = seen["cgil-cub200"]
    assert sorted(c.run.seed for c in cgil) == [1992, 1996, 1997] and {c.backbone for c in cgil} == {"ViT-L/14"}
    assert [c.run.seed for c in seen["cgil-seq-cub200"]] == [c.run.seed for c in cgil]


def fake_run(results: Path, cell: dict, metrics: dict, i: int) -> Path:
    """A finished run's two files as the reports read them (what a real run of the cell would write)."""
    run_dir = results / cell["dataset"] / cell["model"] / f"20260101-00000{i}-fake{i:02d}"
    run_dir.mkdir(parents=True)
    config = {"selection": {"model": cell["model"], "dataset": cell["dataset"], "backbone": "ViT-B/16",
                            "model_config": cell.get("model_config", "default")},
              "run": {"seed": cell["seed"]}, "method": {}, "dataset": {}, "backbone": {},
              "argv": sweep.run_argv(cell, str(results))}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "results.json").write_text(json.dumps({
        "model": cell["model"], "dataset": cell["dataset"], "backbone": "ViT-B/16", "seed": cell["seed"],
        "status": "completed", "accuracy_matrix": {"class_il": [[50.0]], "task_il": [[50.0]]}, "metrics": metrics}))
    return run_dir


def test_report_beside_the_reported_numbers_on_fake_runs(tmp_path):
    table = reproduce.tables()["zscl-mtil-I"]
    results = tmp_path / "results"
    cells = [reproduce.row_cells(table, row, (0,), {})[0] for row in table.rows]
    assert [row.label for row in table.rows] == ["Zero-shot", "Continual-FT", "LwF", "iCaRL", "LwF-VR", "WiSE-FT",
                                                 "ZSCL"]
    fake_run(results, cells[0], {"task_il": {"mtil": {"transfer": 69.0, "avg": 65.0, "last": 65.0}}}, 1)
    fake_run(results, cells[-1], {"task_il": {"mtil": {"transfer": 67.25, "avg": 74.5, "last": 83.0}}}, 2)
    # the whole command on fakes: every cell is finished, so nothing runs, and the table comes out
    for i, cell in enumerate(cells[1:-1], start=3):
        fake_run(results, cell, {"task_il": {"mtil": {"transfer": 44.0, "avg": 55.0, "last": 77.0}}}, i)
    code, out, err = reproduce_main(["zscl-mtil-I", "--results_path", results])
    assert code == 0, err
    assert out.count("skipped (completed)") == 7 and "7 of 7 cells finished" in out
    assert "| ZSCL | this sweep | 0 | 67.25 | 74.50 | 83.00 |" in out
    assert "| ZSCL | reported | – | 68.1 | 75.4 | 83.6 |" in out
    assert "| Zero-shot | reported | – | 69.4 | 65.3 | 65.3 |" in out
    assert "Reported: ZSCL (ICCV 2023) Table 1" in out and "zscl_mtil.md section 3.4" in out
    assert "| WiSE-FT | reported | – | 52.3 | 60.7 | 77.7 |" in out
    assert (results / "grid.yaml").is_file() and len((results / "commands.sh").read_text().splitlines()) == 9
    # synth-mtil's reported numbers are the README's; a row it did not measure (order II's LwF) is a dash
    synth = reproduce.tables()["synth-mtil-II"]
    text = reproduce.report(synth, synth.seeds, {}, str(tmp_path / "none"))
    assert "| Continual-FT | reported | – | 41.55 | 49 | 57 |" in text and "| LwF | reported | – | – | – | – |" in text
    assert "Reported: Tusk's README" in text
    # a row without finished runs shows dashes, and a number no source gave is never filled in
    cgil = reproduce.tables()["cgil-eurosat"]
    text = reproduce.report(cgil, cgil.seeds, {}, str(tmp_path / "none"))
    assert "| CGIL | this sweep | 0 of 3 runs | – | – | – |" in text and "| CGIL | reported | – | – | – | – |" in text
