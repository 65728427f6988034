"""Seeing a run (runs/curves.py, runs/board.py, tools/plot_runs.py): epoch lines read back, result/training.png
after every epoch, several runs overlaid, the configuration at the top of the log as YAML, TensorBoard event files
that continue across a resume."""
import math
import os
import shutil
import sys

import numpy as np
import yaml

import trainSpeakerNet
from core.options import defaults
from runs.curves import NO_LIST, parse_epoch_line, read_history, run_label
from runs.train import epoch_line, step_line
from runs.trainer import EpochStats, StepRecord
from tests.fakes import run_main
from tools import plot_runs


def read_png(path):
    """The picture as an [H, W, 3+] float array, after checking it is a PNG with more than one colour."""
    import matplotlib.image

    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20  # not blank: text, lines, colours
    return image


def stats(acc=12.5, loss=3.25, margin=0.2, skipped=0):
    return EpochStats(loss=loss, acc=acc, steps=10, utterances=40, rate=55.0, margin=margin, skipped=skipped)


def test_epoch_lines_read_back_with_every_field():
    one = {"eer": 12.3456, "min_dcf": {0.05: 0.5, 0.01: 0.75}}
    lines = [
        "2026-12-03 10:00:00 " + epoch_line(1, 0.005, stats(), None),
        epoch_line(2, 0.004, stats(acc=50.0, skipped=3), one, lr_frontend=5e-05),
        epoch_line(3, 0.003, stats(), {"lists": {"O": one, "H": {**one, "eer": 2.5}}}),
    ]
    records = [parse_epoch_line(line) for line in lines]
    assert [r.epoch for r in records] == [1, 2, 3]
    assert records[0].lr == 0.005 and records[0].lr_frontend is None and records[0].results == {}
    assert records[1].acc == 50.0 and records[1].lr_frontend == 5e-05 and records[1].margin == 0.2
    assert records[1].results == {NO_LIST: {"EER": 12.3456, "MinDCF0.05": 0.5, "MinDCF0.01": 0.75}}
    assert records[2].results["H"]["EER"] == 2.5 and set(records[2].results) == {"O", "H"}
    assert parse_epoch_line("2026-12-03 INFO runs.train: Resumed from x") is None
    record = StepRecord(7, 2.0, 1.5, False, 0.1, {"MHFA": 0.005, "transformer.1": 4e-05}, 3.5, 25.0)
    step = parse_epoch_line("2026-12-03 10:00:00 " + step_line(3, 5, 20, record))
    assert (step.epoch, step.at, step.loss, step.acc) == (3, 2.25, 3.5, 25.0)
    assert (step.lr, step.lr_frontend, step.margin, step.results) == (0.005, 4e-05, 0.1, {})


def test_a_resumed_epoch_is_read_once(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("\n".join([epoch_line(1, 0.1, stats(loss=9.0), None), epoch_line(2, 0.1, stats(), None),
                               "a line of something else", epoch_line(2, 0.1, stats(loss=1.0), None)]) + "\n")
    history = read_history(str(path))
    assert [r.epoch for r in history] == [1, 2] and history[1].loss == 1.0  # the later line of epoch 2


def test_training_draws_its_curves_and_logs_its_configuration_as_yaml(trained_run):
    """The trained run has result/training.png; its log starts with the non-default options as a YAML block."""
    save = trained_run["save"]
    read_png(os.path.join(save, "result", "training.png"))
    lines = trained_run["first"].stderr.splitlines()
    header = next(i for i, line in enumerate(lines) if "Configuration:" in line)
    assert "result/config.yaml" in lines[header]
    block = []
    for line in lines[header + 1:]:
        if line[:4].isdigit():  # the next log record (timestamped)
            break
        block.append(line)
    changed = yaml.safe_load("\n".join(block))
    default = defaults()
    assert changed["save_path"] == save and changed["nOut"] == 16 and changed["batch_size"] == 4
    assert {"max_frames", "LR_MHFA", "train_list", "augment", "pretrained_model_path"} <= set(changed)
    assert all(changed[key] != default[key] for key in changed)  # only options not at their defaults
    assert "test_interval" not in changed  # the YAML gives it at its default value


def test_plot_runs_overlays_two_runs(trained_run, tmp_path):
    other = tmp_path / "other_recipe" / "result"
    other.mkdir(parents=True)
    shutil.copy(os.path.join(trained_run["save"], "result", "scores.txt"), other / "scores.txt")
    out = tmp_path / "compare.png"
    done = run_main(plot_runs, trained_run["save"], str(other / "scores.txt"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    read_png(str(out))
    assert run_label(str(other / "scores.txt")) == "other_recipe"
    missing = run_main(plot_runs, str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr and not (tmp_path / "x.png").exists()


def scalars(folder, tag):
    """(steps, values) of ``tag`` as TensorBoard's own reader gives them (purged steps dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    found = events.Scalars(tag)
    return [e.step for e in found], [e.value for e in found]


def test_tensorboard_curves_continue_across_a_resume_without_repeated_steps(tiny_config, tmp_path):
    """Two epochs with TensorBoard; the second epoch's checkpoint is then lost (as when a run dies before writing
    it) and the same command resumes from epoch 1: every step is in the event files once, the resumed values
    replace what the lost epoch wrote, and the epoch records sit at each epoch's last step."""
    cfg, _ = tiny_config
    save, board = tmp_path / "run", tmp_path / "tb"
    args = ["--config", cfg, "--save_path", str(save), "--tensorboard", "true", "--tensorboard_dir", str(board),
            "--augment", "false", "--save_every_steps", "2"]
    first = run_main(trainSpeakerNet, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    history = read_history(str(save / "result" / "scores.txt"))  # step checkpoints inside the epochs
    assert [r.at for r in history if r.at == int(r.at)] == [1.0, 2.0]
    inside = [r for r in history if r.at != int(r.at)]
    assert inside and all(0 < r.at < 2 and not r.results and r.loss > 0 for r in inside)
    steps, losses = scalars(board, "train/loss")
    ends = scalars(board, "epoch/accuracy")[0]  # the original sampler's epochs differ in length
    assert len(ends) == 2 and steps == list(range(1, ends[1] + 1)) and 0 < ends[0] < ends[1]
    os.remove(save / "model" / "model000000002.model")
    again = run_main(trainSpeakerNet, *args)
    assert again.returncode == 0 and "Resumed from" in again.stderr, again.stderr[-3000:]
    steps2, losses2 = scalars(board, "train/loss")
    assert steps2 == steps  # each step once
    assert losses2[:ends[0]] == losses[:ends[0]]  # epoch 1 as written by the first run
    assert all(math.isfinite(v) for v in losses2)
    assert scalars(board, "epoch/accuracy")[0] == ends
    eer_steps, eers = scalars(board, "eval/trials/EER")
    assert eer_steps == ends and all(0 <= v <= 100 for v in eers)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lr_tags = [t for t in EventAccumulator(str(board)).Reload().Tags()["scalars"] if t.startswith("lr/")]
    assert "lr/MHFA" in lr_tags and any(t.startswith("lr/transformer.") for t in lr_tags)
    assert scalars(board, "train/grad_norm")[0] == steps and scalars(board, "train/margin")[0] == steps


def test_tensorboard_without_the_package_is_a_one_line_error(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    cfg, _ = tiny_config
    done = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(tmp_path / "run"), "--tensorboard", "true")
    assert done.returncode == 2 and "pip install tensorboard" in done.stderr
    assert not (tmp_path / "run" / "model").exists()  # stopped before training
