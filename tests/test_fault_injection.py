"""Fault injection: SIGKILL inside the checkpoint and results writes, a full disk, damaged checkpoints and cache
files, a read-only cache, signals in every phase, resume after --stop_after, before the first checkpoint and of a
completed run, and the network guard. Tiny seq-synth runs, in-process where a real process is not the point."""
from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import main
from conftest import REPO, netguard
from utils.atomic import CHECKSUM_KEY, OutputError, load_checked, save_checked, write_json

TINY = ["--dataset", "seq-synth", "--synth_train_per_class", "4", "--synth_test_per_class", "2", "--quiet", "1",
        "--n_epochs", "1", "--batch_size", "16", "--seed", "3"]
SGD = ["--model", "sgd", *TINY, "--stop_after", "3"]
ZERO_SHOT = ["--model", "zeroshot-clip", *TINY, "--stop_after", "2"]


def run_dir(results: Path) -> Path:
    (run,) = [p for p in results.glob("*/*/*") if p.is_dir()]
    return run


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def same_numbers(a: dict, b: dict) -> bool:
    return a["accuracy_matrix"] == b["accuracy_matrix"] and a["metrics"] == b["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted tiny sgd run (3 tasks) every stopped one must end up equal to."""
    results = tmp_path_factory.mktemp("reference")
    assert main.main([*SGD, "--results_path", str(results)]) == 0
    return results_of(run_dir(results))


# ---- SIGKILL inside a write, in a real process ------------------------------------------------------------
KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads({threads})      # the test process's count: the same numbers as the in-process reference
target, nth = {target!r}, {nth}
seen = [0]
replace = os.replace
def killing_replace(src, dst):      # the temporary file is written and synced; die before it is renamed
    if os.path.basename(str(dst)) == target:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = killing_replace
import main
sys.exit(main.main({argv!r}))
"""


def test_sigkill_inside_the_checkpoint_write_resumes_to_identical_results(reference, tmp_path):
    results = tmp_path / "results"
    code = KILLER.format(repo=str(REPO), threads=torch.get_num_threads(), target="checkpoint.pt", nth=2,
                         argv=[*SGD, "--results_path", str(results)])
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run = run_dir(results)
    assert list(run.glob(".checkpoint.pt.*.tmp")), "the killed write left its temporary file"
    assert results_of(run)["tasks_completed"] == 1          # what was published before the kill
    assert main.main(["--resume", str(run), "--quiet"]) == 0
    after = results_of(run)
    assert after["status"] == "stopped" and same_numbers(after, reference)
    assert not list(run.glob(".*.tmp")), "leftover temporary files are removed when the resume completes"


class Killed(BaseException):
    """What SIGKILL does in-process: nothing of the run's own handling runs (only the write's cleanup, which a
    real kill skips; the subprocess test above covers that)."""


def test_a_kill_inside_the_results_write_resumes_to_identical_results(reference, tmp_path, monkeypatch):
    results, replace, seen = tmp_path / "results", os.replace, []

    def killing_replace(src, dst):
        if os.path.basename(str(dst)) == "results.json":
            seen.append(dst)
            if len(seen) == 2:                  # task 2's row: its checkpoint is written, its results are not
                raise Killed()
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", killing_replace)
    with pytest.raises(Killed):
        main.main([*SGD, "--results_path", str(results)])
    monkeypatch.undo()
    run = run_dir(results)
    assert results_of(run)["tasks_completed"] == 1
    assert load_checked(run / "checkpoint.pt", "checkpoint")["completed_tasks"] == 2
    assert main.main(["--resume", str(run)]) == 0
    assert same_numbers(results_of(run), reference)


# ---- a full disk ------------------------------------------------------------------------------------------
def test_a_full_disk_stops_with_one_line_and_the_run_resumes(reference, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    save, calls = torch.save, []

    def full_disk_save(obj, f, *args, **kwargs):
        if os.path.basename(str(f)).startswith(".checkpoint.pt."):
            calls.append(f)
            if len(calls) == 2:
                Path(f).write_bytes(b"\0" * 100)                # a partial write, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    assert main.main([*SGD, "--results_path", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "--results_path" in err, err
    run = run_dir(results)
    assert load_checked(run / "checkpoint.pt", "checkpoint")["completed_tasks"] == 1      # the earlier one, intact
    assert results_of(run)["tasks_completed"] == 1 and not list(run.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", save)
    assert main.main(["--resume", str(run)]) == 0
    assert same_numbers(results_of(run), reference)


def test_a_failed_json_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(path, {"tasks": 1})

    def full(obj, fh, **kwargs):
        fh.write('{"tas')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(OutputError, match="cannot write .*results.json: No space left on device"):
        write_json(path, {"tasks": 2})
    assert path.read_text() == '{\n  "tasks": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---- damaged files are detected, never used ---------------------------------------------------------------
def test_a_checksum_covers_every_tensor_and_value(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)},
             "rng": torch.ByteTensor([1, 2, 3]), "completed_tasks": 2, "names": ["a", "b"]}
    save_checked(tmp_path / "c.pt", state)
    assert load_checked(tmp_path / "c.pt", "checkpoint")["completed_tasks"] == 2
    for change in (lambda s: s["model"]["w"].__setitem__((0, 0), 1e-7), lambda s: s.__setitem__("completed_tasks", 3),
                   lambda s: s["model"].pop("b"), lambda s: s["names"].append("c")):
        blob = torch.load(tmp_path / "c.pt", weights_only=True)
        change(blob)
        torch.save(blob, tmp_path / "d.pt")
        with pytest.raises(Exception, match="does not match its checksum"):
            load_checked(tmp_path / "d.pt", "checkpoint")


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory):
    """A zero-shot run that fills a fresh feature cache, and its results."""
    root = tmp_path_factory.mktemp("zero-shot")
    cache = root / "cache"
    assert main.main([*ZERO_SHOT, "--feature_cache", str(cache), "--results_path", str(root / "clean")]) == 0
    return cache, results_of(run_dir(root / "clean"))


def _zero_the_text_features(path: Path) -> None:           # re-saved without our checksum: altered
    blob = torch.load(path, weights_only=True)
    blob["features"] = torch.zeros_like(blob["features"])
    torch.save(blob, path)


def _wrong_shape(path: Path) -> None:                       # a valid checksum, the wrong content
    blob = load_checked(path, "cache file")
    save_checked(path, {**blob, "features": torch.randn(3, *blob["features"].shape[1:])})


def _noisy(path: Path) -> None:                             # flipped bytes inside the feature tensor
    from test_bad_input import flip_tensor_bytes
    flip_tensor_bytes(path)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("damage_image, damage_text", [(_noisy, _zero_the_text_features), (_wrong_shape, _truncated)])
def test_a_damaged_cache_file_is_recomputed_with_a_warning(damage_image, damage_text, zero_shot, tmp_path):
    import shutil
    clean_cache, clean = zero_shot
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    damaged = [(p, damage_image) for p in (cache / "image").glob("*.pt")] + \
        [(p, damage_text) for p in (cache / "text").glob("*.pt")]
    assert len(damaged) >= 2
    for path, damage in damaged:
        damage(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main.main([*ZERO_SHOT, "--feature_cache", str(cache), "--results_path", str(tmp_path / "r")]) == 0
    recomputed = {str(w.message).split(": ")[0] for w in caught if "recomputing the features" in str(w.message)}
    assert len(recomputed) == len(damaged), recomputed
    assert same_numbers(results_of(run_dir(tmp_path / "r")), clean)
    for path, _ in damaged:                               # rewritten whole, with a checksum
        assert CHECKSUM_KEY not in load_checked(path, "cache file")


def test_an_unwritable_cache_computes_in_memory_with_a_warning(zero_shot, tmp_path, monkeypatch):
    import utils.feature_cache as fc

    def read_only(path, blob):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fc, "save_checked", read_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main.main([*ZERO_SHOT, "--feature_cache", str(tmp_path / "ro"), "--results_path", str(tmp_path / "r")]) == 0
    messages = [str(w.message) for w in caught if "cannot be written" in str(w.message)]
    assert len(messages) == 1 and "Read-only file system" in messages[0]
    assert same_numbers(results_of(run_dir(tmp_path / "r")), zero_shot[1])


# ---- resume after every kind of stop ----------------------------------------------------------------------
def test_resume_continues_a_stop_after_run(reference, tmp_path, capsys):
    results = tmp_path / "results"
    argv = [a if a != "3" or prev != "--stop_after" else "1" for prev, a in zip([None, *SGD], SGD)]
    assert main.main([*argv, "--results_path", str(results)]) == 0
    run = run_dir(results)
    assert results_of(run)["status"] == "stopped"
    assert main.main(["--resume", str(run), "--stop_after", "2"]) == 0
    assert results_of(run)["tasks_completed"] == 2
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["stop_after"] == 2
    # without --stop_after, a run that reached its own stop continues to the end (the reference's 3 tasks: its
    # dataset has 10, so the reference itself stopped at 3; continue the same way)
    assert main.main(["--resume", str(run), "--stop_after", "3"]) == 0
    assert same_numbers(results_of(run), reference)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main.main(["--resume", str(run), "--stop_after", "3"]) == 2       # nothing left to do up to task 3
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_completed_run_is_left_unchanged(tmp_path, capsys):
    results = tmp_path / "results"
    no_training = [a if prev != "--n_epochs" else "0" for prev, a in zip([None, *TINY], TINY)]
    assert main.main(["--model", "sgd", *no_training, "--results_path", str(results)]) == 0
    run = run_dir(results)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main.main(["--resume", str(run)]) == 0
    assert "already completed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def _signal_on(monkeypatch, cls, name, signum=signal.SIGINT):
    """Send ``signum`` to this process from inside ``cls.name``; returns the list of calls made after it."""
    original, calls = getattr(cls, name), []

    @functools.wraps(original)          # the same signature (the loop passes observe the fields it names)
    def wrapped(*args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)
    return calls


def test_a_signal_before_the_first_checkpoint_resumes_from_the_start(reference, tmp_path, monkeypatch, capsys):
    from models.sgd import Sgd
    results = tmp_path / "results"
    calls = _signal_on(monkeypatch, Sgd, "observe", signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        main.main([*SGD, "--results_path", str(results)])
    assert stop.value.code == 128 + signal.SIGTERM and len(calls) == 1        # the step ends, no other starts
    err = capsys.readouterr().err
    assert "no task completed yet" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.undo()
    run = run_dir(results)
    assert main.main(["--resume", str(run)]) == 0
    assert same_numbers(results_of(run), reference)


# ---- signals in every phase -------------------------------------------------------------------------------
def test_signals_stop_encoding_and_data_generation_at_once(tmp_path, monkeypatch, capsys):
    from backbone.clip import ClipBackbone
    from datasets.utils.synthetic_world import SyntheticWorld
    calls = _signal_on(monkeypatch, ClipBackbone, "encode_image")
    with pytest.raises(SystemExit) as stop:
        main.main([*ZERO_SHOT, "--feature_cache", "off", "--results_path", str(tmp_path / "a")])
    assert stop.value.code == 130 and len(calls) == 1          # not one more batch encoded
    monkeypatch.undo()
    renders = _signal_on(monkeypatch, SyntheticWorld, "make_split", signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        main.main([*SGD, "--results_path", str(tmp_path / "b")])
    assert stop.value.code == 128 + signal.SIGTERM and len(renders) == 1     # the split is not even finished
    assert "Traceback" not in capsys.readouterr().err


def test_a_signal_waits_for_a_write_and_a_second_one_exits_at_once(tmp_path, monkeypatch):
    from utils import signals
    with signals.handled():
        with pytest.raises(signals.Interrupted):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                (tmp_path / "done").write_text("the section finished")
        assert (tmp_path / "done").is_file()
        exits = []
        monkeypatch.setattr(os, "_exit", lambda code: exits.append(code) or (_ for _ in ()).throw(SystemExit(code)))
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGINT)                # the first was not cleared: this is the second
        assert exits == [130]


# ---- the network guard ------------------------------------------------------------------------------------
def test_the_suite_cannot_reach_the_network():
    import socket
    before = len(netguard.ATTEMPTS)
    with pytest.raises(netguard.NetworkBlocked):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(netguard.NetworkBlocked):
        socket.getaddrinfo("example.com", 443)
    child = subprocess.run([sys.executable, "-c", "import urllib.request; urllib.request.urlopen('http://example.com')"],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0 and "NetworkBlocked" in child.stderr
    server = socket.socket()
    server.bind(("127.0.0.1", 0))                       # loopback stays allowed (fake remotes)
    server.listen(1)
    socket.create_connection(server.getsockname(), timeout=1).close()
    server.close()
    del netguard.ATTEMPTS[before:]                      # this test's attempts were the point
