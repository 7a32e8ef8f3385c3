"""Novel-data detection and calibration work for every method of the CLAP4CLIP prompt family: shared class
features (CoOp), a prompted image encoder (MaPLe), per-image class features (AttriCLIP), and CLAP on each."""
import pytest

from conftest import train_steps
from utils.config import parse_config
from utils.evaluate import evaluate_step
from utils.experiment import build

TINY = ["--dataset", "seq-synth", "--seed", "0", "--synth_train_per_class", "8", "--synth_test_per_class", "6",
        "--quiet", "1", "--feature_cache", "off"]
METHODS = {
    "coop": ["--model", "coop"],
    "maple": ["--model", "maple"],
    "attriclip": ["--model", "attriclip", "--attr_n_ctx", "2"],
    "clap-coop": ["--model", "clap4clip", "--prompt", "coop", "--forward_times", "3"],
    "clap-maple": ["--model", "clap4clip", "--prompt", "maple", "--forward_times", "3"],
    "clap-attriclip": ["--model", "clap4clip", "--prompt", "attriclip", "--attr_n_ctx", "2", "--forward_times", "3"],
}


@pytest.mark.parametrize("name", METHODS)
def test_novelty_and_calibration_after_a_trained_task(name):
    config, _ = parse_config([*METHODS[name], *TINY, "--buffer_size", "20", "--n_epochs", "1"])
    dataset, model = build(config)
    train_steps(model, dataset, 0, steps=2)
    model.meta_end_task(dataset)
    test = {k: dataset.task_data(k, "test") for k in range(3)}
    result = evaluate_step(model, dataset, test, 0, [0], calibration=True, novel_tasks=[1, 2], batch_size=32)
    expected = {"energy", "max_softmax"} | ({"variance"} if name.startswith("clap") else set())
    assert set(result.novelty) - {"n_in", "n_novel"} == expected
    assert (result.novelty["n_in"], result.novelty["n_novel"]) == (60, 120)
    # task 0's images score higher on task 0's classes than images of unseen classes do
    assert result.novelty["energy"]["auroc"] > 60, result.novelty
    assert 0 <= result.calibration["ece"] <= 100 and result.class_il[0] > 50
