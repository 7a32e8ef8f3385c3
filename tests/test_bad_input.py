"""The bad-input matrix: every user error of ``main.py`` is one line on stderr, exit code 2, no traceback.

Run in-process (``main.main(argv)``) on a tiny seq-synth, so that the whole matrix costs a few seconds; the
resume cases damage copies of two tiny runs made once for the module.
"""
from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import main
from utils.atomic import CHECKSUM_KEY

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "4", "--synth_test_per_class", "2", "--quiet", "1",
        "--n_epochs", "1", "--batch_size", "16", "--feature_cache", "off"]


class Code:
    """Pickled by reference: ``weights_only`` refuses to build it."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs stopped after their first task (sgd and er: checkpoints of two different models), and the
    hostile input files."""
    root = tmp_path_factory.mktemp("bad-input")
    out = {"root": root}
    for model, extra in (("sgd", []), ("er", ["--buffer_size", "8"])):
        assert main.main(["--model", model, *TINY, *extra, "--stop_after", "1",
                          "--results_path", str(root / "results")]) == 0
        out[model] = next((root / "results" / "seq-synth" / model).iterdir())
    files = root / "files"
    files.mkdir()
    (files / "afile").write_text("x")
    (files / "binary.txt").write_bytes(bytes(range(256)))
    (files / "nul.txt").write_text("0\n1\n\x00\x02\n")
    (files / "dup.txt").write_text("\n".join(["0", "1", "0"] + [str(i) for i in range(2, 100)]))
    (files / "range.txt").write_text("\n".join(map(str, range(99))) + "\n100\n")
    (files / "name.txt").write_text("no such class\n")
    (files / "short.txt").write_text("\n".join(map(str, range(50))))
    return out


def damaged_copy(runs, tmp_path, model="sgd") -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs[model], run)
    return run


def flip_tensor_bytes(path: Path) -> None:
    """Flip 4 KB inside the largest tensor's storage of a torch zip file: the archive stays readable."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 64  # past the local header
    for i in range(start, start + min(4096, info.file_size - 128)):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def _resume_case(prepare):
    """A case that damages a copy of the sgd run (``prepare(run, runs)``) and resumes it."""
    return ("resume", prepare)


CASES = {
    # numbers
    "lr nan": ["--model", "sgd", *TINY, "--lr", "nan"],
    "lr inf": ["--model", "sgd", *TINY, "--lr", "inf"],
    "lr -inf": ["--model", "sgd", *TINY, "--lr", "-inf"],
    "momentum nan": ["--model", "sgd", *TINY, "--optim_mom", "nan"],
    "gamma inf": ["--model", "sgd", *TINY, "--sched_gamma", "inf"],
    "lr not a number": ["--model", "sgd", *TINY, "--lr", "fast"],
    "seed negative": ["--model", "sgd", *TINY, "--seed", "-1"],
    "seed fractional": ["--model", "sgd", *TINY, "--seed", "1.5"],
    "seed beyond 32 bits": ["--model", "sgd", *TINY, "--seed", "99999999999999999999"],
    "steps beyond 64 bits": ["--model", "sgd", *TINY, "--n_iters", "100000000000000000000"],
    "lr overflows to inf": ["--model", "sgd", *TINY, "--lr", "1e400"],
    "not a torch device": ["--model", "sgd", *TINY, "--device", "gpu0"],
    "momentum above 1": ["--model", "sgd", *TINY, "--optim_mom", "2"],
    "n_iters zero": ["--model", "sgd", *TINY, "--n_iters", "0"],
    "milestones not ints": ["--model", "sgd", *TINY, "--lr_milestones", "a,b"],
    "bool not a bool": ["--model", "sgd", *TINY, "--checkpoint", "maybe"],
    "unknown choice": ["--model", "sgd", *TINY, "--optimizer", "adagrad"],
    # sizes
    "buffer too large": ["--model", "er", *TINY, "--buffer_size", "100000000000"],
    "feature views too many": ["--model", "clip-adapter", *TINY, "--feature_views", "1000000"],
    # names and flags
    "unknown model": ["--model", "nosuch", *TINY],
    "unknown dataset": ["--model", "sgd", "--dataset", "seq-nosuch"],
    "unknown backbone": ["--model", "sgd", *TINY, "--backbone", "resnet999"],
    "no model": TINY,
    "misspelt flag": ["--model", "er", *TINY, "--buffersize", "10"],
    "another method's flag": ["--model", "sgd", *TINY, "--alpha", "0.3"],
    "repeated flag": ["--model", "sgd", *TINY, "--seed", "1", "--seed", "2"],
    "repeated across spellings": ["--model", "zeroshot-clip", *TINY, "--eval-future", "1", "--eval_future", "0"],
    "stray value": ["--model", "sgd", *TINY, "stray"],
    "evaluation flag while training": ["--model", "sgd", *TINY, "--eval_datasets", "seq-synth"],
    # paths
    "results path is a file": ["--model", "sgd", *TINY, "--results_path", "{files}/afile"],
    "results path below a file": ["--model", "sgd", *TINY, "--results_path", "{files}/afile/sub"],
    "results path empty": ["--model", "sgd", *TINY, "--results_path", ""],
    "feature cache is a file": ["--model", "zeroshot-clip", *TINY[:-2], "--feature_cache", "{files}/afile"],
    # files we are given
    "class order missing file": ["--model", "sgd", *TINY, "--class_order", "{files}/none.txt"],
    "class order binary": ["--model", "sgd", *TINY, "--class_order", "{files}/binary.txt"],
    "class order NUL bytes": ["--model", "sgd", *TINY, "--class_order", "{files}/nul.txt"],
    "class order duplicate": ["--model", "sgd", *TINY, "--class_order", "{files}/dup.txt"],
    "class order out of range": ["--model", "sgd", *TINY, "--class_order", "{files}/range.txt"],
    "class order unknown name": ["--model", "sgd", *TINY, "--class_order", "{files}/name.txt"],
    "class order too short": ["--model", "sgd", *TINY, "--class_order", "{files}/short.txt"],
    "resume no such run": ["--resume", "{files}/nowhere"],
    "resume changed setting": _resume_case(lambda run, runs: ["--lr", "0.5"]),
    "resume stop_after already reached": _resume_case(lambda run, runs: ["--stop_after", "1"]),
    "resume config garbage": _resume_case(lambda run, runs: (run / "config.json").write_text("{not json")),
    "resume config empty": _resume_case(lambda run, runs: (run / "config.json").write_text("")),
    "resume config binary": _resume_case(lambda run, runs: (run / "config.json").write_bytes(b"\xff\xfe\x00")),
    "resume config not a run": _resume_case(lambda run, runs: (run / "config.json").write_text("[1, 2]")),
    "resume config of an unknown model": _resume_case(lambda run, runs: (run / "config.json").write_text(
        json.dumps({**json.loads((run / "config.json").read_text()), "selection": {
            "model": "nosuch", "dataset": "seq-synth", "backbone": "small-cnn", "model_config": "none"}}))),
    "resume config incomplete": _resume_case(lambda run, runs: (run / "config.json").write_text(
        json.dumps({"selection": json.loads((run / "config.json").read_text())["selection"]}))),
    "resume checkpoint empty": _resume_case(lambda run, runs: (run / "checkpoint.pt").write_bytes(b"")),
    "resume checkpoint truncated": _resume_case(lambda run, runs: (run / "checkpoint.pt").write_bytes(
        (run / "checkpoint.pt").read_bytes()[:5000])),
    "resume checkpoint garbage": _resume_case(lambda run, runs: (run / "checkpoint.pt").write_bytes(
        bytes(range(256)) * 40)),
    "resume checkpoint flipped bytes": _resume_case(lambda run, runs: flip_tensor_bytes(run / "checkpoint.pt")),
    "resume checkpoint with code": _resume_case(lambda run, runs: torch.save(
        {"format": 2, "model": Code()}, run / "checkpoint.pt", pickle_module=pickle)),
    "resume checkpoint without checksum": _resume_case(lambda run, runs: torch.save(
        {k: v for k, v in torch.load(run / "checkpoint.pt", weights_only=True).items() if k != CHECKSUM_KEY},
        run / "checkpoint.pt")),
    "resume checkpoint of another model": _resume_case(lambda run, runs: shutil.copy(
        runs["er"] / "checkpoint.pt", run / "checkpoint.pt")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_exit_2_no_traceback(case, runs, tmp_path, capsys):
    spec = CASES[case]
    if isinstance(spec, tuple):
        run = damaged_copy(runs, tmp_path)
        extra = spec[1](run, runs)
        argv = ["--resume", str(run), *(extra if isinstance(extra, list) else [])]
    else:
        argv = [a.replace("{files}", str(runs["root"] / "files")) for a in spec]
        if "--results_path" not in argv and "--resume" not in argv:
            argv += ["--results_path", str(tmp_path / "results")]
    capsys.readouterr()
    rc = main.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert "Traceback" not in err
    if not isinstance(spec, tuple):
        assert not list((tmp_path / "results").glob("*/*/*")), "an error left a run directory behind"


def test_the_messages_name_what_is_wrong(runs, tmp_path, capsys):
    """Spot checks of what the lines say: the flag, the entry, the closest flag, the owner."""
    files = runs["root"] / "files"
    expected = {
        ("--model", "er", *TINY, "--buffersize", "10"): "did you mean --buffer_size?",
        ("--model", "sgd", *TINY, "--alpha", "0.3"): "--alpha is an option of model 'derpp'",
        ("--model", "sgd", *TINY, "--lr", "nan"): "--lr: expected a finite number, got nan",
        ("--model", "sgd", *TINY, "--class_order", str(files / "dup.txt")): "line 3",
        ("--model", "sgd", *TINY, "--class_order", str(files / "range.txt")): "class index 100 is out of range",
        ("--model", "er", *TINY, "--buffer_size", "100000000000"): "--buffer_size: a memory of 100000000000 items",
        ("--model", "sgd", *TINY, "--seed", "1", "--seed", "2"): "--seed is given more than once",
    }
    for argv, text in expected.items():
        assert main.main([*argv, "--results_path", str(tmp_path)]) == 2
        assert text in capsys.readouterr().err, argv


def test_a_run_in_use_is_refused(runs, tmp_path, capsys):
    from utils.experiment import lock_run_dir
    run = damaged_copy(runs, tmp_path)
    lock = lock_run_dir(run)                  # as a second process resuming it would hold it
    try:
        before = (run / "log.jsonl").read_text()
        assert main.main(["--resume", str(run)]) == 2
        assert "in use by another Tusk process" in capsys.readouterr().err
        assert (run / "log.jsonl").read_text() == before
    finally:
        lock.close()


def test_spellings_that_are_the_same_flag(tmp_path):
    from utils.config import parse_config
    base = ["--model", "zeroshot-clip", "--dataset", "seq-synth"]
    bare, _ = parse_config([*base, "--quiet", "--eval-future", "1"])
    spelt, _ = parse_config([*base, "--quiet", "1", "--eval_future", "1"])
    assert bare.run.quiet is True and bare.run.eval_future is True
    assert bare.run == spelt.run
    alias, _ = parse_config(["--model", "zeroshot_clip", "--dataset", "seq_synth"])
    assert (alias.model, alias.dataset) == ("zeroshot-clip", "seq-synth")


def test_the_report_scripts_skip_malformed_runs_and_never_crash(runs, tmp_path, capsys):
    """leaderboard.py and plot_results.py over a root with a good run, a run with 0 tasks, truncated, hand-edited
    and binary results.json files: the good run is reported, every other one is skipped with a one-line note."""
    import importlib.util
    import sys
    from conftest import REPO

    def script(name):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    root = tmp_path / "root"
    shutil.copytree(runs["sgd"], root / "good")
    good = json.loads((root / "good" / "results.json").read_text())
    bad = {"zero": {**good, "accuracy_matrix": {"class_il": [], "task_il": []}, "tasks_completed": 0},
           "rows": {**good, "accuracy_matrix": {"class_il": [[1.0], [1.0, 2.0]], "task_il": []}},
           "values": {**good, "accuracy_matrix": {"class_il": [["x"]], "task_il": []}},
           "metrics": {**good, "metrics": [1, 2]}, "seed": {**good, "seed": "zero"}, "list": [1, 2]}
    for name, blob in bad.items():
        (root / name).mkdir()
        (root / name / "results.json").write_text(json.dumps(blob))
    for name, raw in (("truncated", (root / "good" / "results.json").read_bytes()[:100]), ("binary", b"\xff\x00"),
                      ("empty", b"")):
        (root / name).mkdir()
        (root / name / "results.json").write_bytes(raw)
    leaderboard = script("leaderboard")
    capsys.readouterr()
    assert leaderboard.main([str(root), "--include-incomplete", "--out-md", str(tmp_path / "b.md")]) == 0
    out, err = capsys.readouterr()
    assert "| sgd |" in out and (tmp_path / "b.md").read_text() == out
    notes = err.strip().splitlines()
    assert len(notes) == len(bad) + 3 and all(n.startswith("note: skipping") for n in notes), err
    assert leaderboard.main([str(root / "zero"), "--include-incomplete"]) == 2          # nothing usable: one line
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no completed run")
    assert leaderboard.main([str(root), "--include-incomplete", "--out-csv", str(root)]) == 2   # a directory
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --out-csv")
    plots = script("plot_results")
    (tmp_path / "afile").write_text("x")
    assert plots.main([str(root), "--include-incomplete", "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --out")
    assert "Traceback" not in err and sys.modules.get("leaderboard") is None
