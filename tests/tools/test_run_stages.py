"""The recipes in yaml/ and tools/run_stages.sh: every recipe YAML loads and trains a short stage on the demo
data (paths overridden); a stage starts from the newest model of the previous stage's save_path."""
import glob
import os
import subprocess
import sys

import pytest
import torch

import trainSpeakerNet
from core.config import read_yaml
from tests.fakes import ROOT

RECIPES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "yaml", "**", "*.yaml"),
                                                                recursive=True) if "demo" not in p)
STAGED = [("yaml/Baseline.yaml", "yaml/Baseline_lm.yaml")] + [
    tuple(f"yaml/{name}/{stage}.yaml" for stage in ("1_frozen", "2_joint", "3_lmft"))
    for name in ("wespeaker_base_plus", "wespeaker_large", "camhfa_base_plus")] + [
    ("yaml/camhfa_author/1_joint.yaml", "yaml/camhfa_author/2_lmft.yaml")]


def demo_options(small_demo, save_path):
    """The demo's paths and a short run; global_batch 8 (4 batches of 2) replaces the recipes' global batch."""
    return ["--pretrained_model_path", small_demo["checkpoint"], "--train_list", small_demo["train_list"],
            "--train_path", small_demo["train_dir"], "--musan_path", small_demo["musan_dir"], "--rir_path",
            small_demo["rir_dir"], "--test_list", small_demo["trials"], "--test_path", small_demo["test_dir"],
            "--nClasses", "6", "--batch_size", "2", "--max_epoch", "1", "--max_frames", "60", "--eval_frames", "60",
            "--nDataLoaderThread", "0", "--global_batch", "8", "--save_path", str(save_path)]


def test_every_recipe_is_in_a_chain_or_alone():
    assert set(RECIPES) >= {p for chain in STAGED for p in chain}
    for path in RECIPES:
        config = read_yaml(os.path.join(ROOT, path))
        assert config["save_path"].startswith("exp/") and config["pretrained_model_path"].startswith("/path/to/")


@pytest.mark.parametrize("chain", STAGED, ids=[os.path.dirname(c[0]) or "original" for c in STAGED])
def test_stages_run_in_order_each_from_the_previous(chain, small_demo, tmp_path, capsys):
    previous = None
    for number, path in enumerate(chain, 1):
        save = tmp_path / f"stage{number}"
        seed = ["--initial_model_from", str(previous)] if previous else []
        trainSpeakerNet.main(["--config", os.path.join(ROOT, path), *demo_options(small_demo, save), *seed])
        assert capsys.readouterr().out.startswith("EER ")
        model = torch.load(save / "model" / "model000000001.model", weights_only=True)["model"]
        if previous:  # started from the previous stage's newest model, and changed it
            before = torch.load(previous / "model" / "model000000001.model", weights_only=True)["model"]
            backend = [k for k in model if k.startswith("encoder.backend.")]
            assert backend and any(not torch.equal(model[k], before[k]) for k in backend)
            assert max(float((model[k] - before[k]).abs().max()) for k in backend) < 1.0  # not a fresh start
        previous = save


def test_the_original_second_stage_needs_no_flag(small_demo, tmp_path, capsys):
    """yaml/Baseline_lm.yaml names where it starts (initial_model_from); without stage 1 it says so."""
    assert read_yaml(os.path.join(ROOT, "yaml", "Baseline_lm.yaml"))["initial_model_from"] == "exp/Baseline"
    with pytest.raises(SystemExit) as exit_info:
        trainSpeakerNet.main(["--config", os.path.join(ROOT, "yaml", "Baseline_lm.yaml"),
                              *demo_options(small_demo, tmp_path / "lm"), "--initial_model_from", str(tmp_path / "s1")])
    assert exit_info.value.code == 2 and "holds no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_run_stages_script(small_demo, tmp_path):
    stage1, stage2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    names = demo_options(small_demo, tmp_path / "run_a")[::2]
    options = dict(zip(names, demo_options(small_demo, "")[1::2], strict=True))
    common = "".join(f"{k[2:]}: {v}\n" for k, v in options.items() if k != "--save_path")
    stage1.write_text(common + f"nOut: 16\nhead_nb: 2\ncompression_dim: 8\nsave_path: {tmp_path / 'run_a'}\n")
    stage2.write_text(stage1.read_text().replace("run_a", "run_b") + f"initial_model_from: {tmp_path / 'run_a'}\n"
                      "margin: 0.5\n")
    stage1, stage2 = stage1.rename(tmp_path / "test_stage_a.yaml"), stage2.rename(tmp_path / "test_stage_b.yaml")
    logs = tmp_path / "logs"
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "run_stages.sh"), str(stage1), str(stage2)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "LOG_DIR": str(logs)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("EER ")
    assert (tmp_path / "run_b" / "model" / "model000000001.model").is_file()
    assert sorted(os.listdir(logs)) == ["test_stage_a.log", "test_stage_b.eval.log", "test_stage_b.log"]
    log = (logs / "test_stage_b.log").read_text()
    assert "Initial model" in log and str(tmp_path / "run_a") in log
