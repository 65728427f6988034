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
    ("yaml/camhfa_author/1_joint.yaml", "yaml/camhfa_author/2_lmft.yaml"),
    ("yaml/wavlm_lora/1_lora.yaml", "yaml/wavlm_lora/2_lmft.yaml"),
    ("yaml/w2vbert_mhfa/1_lora.yaml", "yaml/w2vbert_mhfa/2_ft.yaml", "yaml/w2vbert_mhfa/3_lmft.yaml")]


def demo_options(small_demo, save_path, recipe=None, epochs=1, w2vbert=None):
    """The demo's paths and a short run; global_batch 8 (4 batches of 2) replaces the recipes' global batch. MUSAN
    as the recipe reads it: whole recordings for wespeaker's augmentation, 5 s chunks for the original's. A w2v-BERT
    recipe gets the tiny w2v-BERT folder ``w2vbert``; with speed perturbation the demo's 6 speakers are 18 classes."""
    config = read_yaml(os.path.join(ROOT, recipe)) if recipe is not None else {}
    musan = small_demo["musan_raw_dir" if config.get("augment_mode") == "wespeaker" else "musan_dir"]
    pretrained = w2vbert if "w2v-bert" in config.get("pretrained_model_path", "") else small_demo["checkpoint"]
    classes = 18 if config.get("speed_perturb") else 6
    return ["--pretrained_model_path", pretrained, "--train_list", small_demo["train_list"],
            "--train_path", small_demo["train_dir"], "--musan_path", musan,
            "--rir_path", small_demo["rir_dir"], "--test_list", small_demo["trials"], "--test_path",
            small_demo["test_dir"], "--nClasses", str(classes), "--batch_size", "2", "--max_epoch", str(epochs),
            "--max_frames", "60", "--eval_frames", "60", "--nDataLoaderThread", "0", "--global_batch", "8",
            "--save_path", str(save_path)]


def test_every_recipe_is_in_a_chain_or_alone():
    assert set(RECIPES) >= {p for chain in STAGED for p in chain}
    for path in RECIPES:
        config = read_yaml(os.path.join(ROOT, path))
        assert config["save_path"].startswith("exp/") and config["pretrained_model_path"].startswith("/path/to/")


@pytest.mark.parametrize("chain", STAGED, ids=[os.path.dirname(c[0]) or "original" for c in STAGED])
def test_stages_run_in_order_each_from_the_previous(chain, small_demo, tiny_w2vbert, tmp_path, capsys):
    """Each stage starts from the previous one's newest checkpoint, or from the average of its newest
    initial_model_average (the previous stage then runs that many epochs)."""
    previous = None
    for number, path in enumerate(chain, 1):
        save = tmp_path / f"stage{number}"
        seed = ["--initial_model_from", str(previous)] if previous else []
        following = read_yaml(os.path.join(ROOT, chain[number])) if number < len(chain) else {}
        epochs = following.get("initial_model_average", 1)
        trainSpeakerNet.main(["--config", os.path.join(ROOT, path),
                              *demo_options(small_demo, save, path, epochs, tiny_w2vbert), *seed])
        assert capsys.readouterr().out.startswith("EER ")
        model = torch.load(save / "model" / f"model00000000{epochs}.model", weights_only=True)["model"]
        if previous:  # started from the previous stage's newest model(s), and changed it
            before = torch.load(sorted((previous / "model").glob("model*.model"))[-1], weights_only=True)["model"]
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


WESPEAKER_V4 = {  # BUTSpeechFIT/wespeaker_ssl_public v4: conf/MHFA/MHFA_{Base,Large}_Frozen{,_FT,_FT_LMFT}.yaml
    # stage: (epochs, crop frames, per-GPU batch x 4 GPUs, rate x world_size x batch / 64, trains the SSL model)
    "wespeaker_base_plus/1_frozen": (10, 300, 512, 0.8, False),
    "wespeaker_base_plus/2_joint": (10, 300, 512, 8e-4, True),
    "wespeaker_base_plus/3_lmft": (3, 500, 64, 1e-5, True),
    "wespeaker_large/1_frozen": (10, 300, 512, 0.8, False),
    "wespeaker_large/2_joint": (5, 300, 128, 1e-4, True),
    "wespeaker_large/3_lmft": (3, 300, 64, 1e-5, True),
}


@pytest.mark.parametrize("stage", sorted(WESPEAKER_V4))
def test_wespeaker_recipes_are_wespeakers_run(stage):
    """What wespeaker's v4 run does, stage by stage: its epochs, crops, global batch and scaled rate; every
    utterance once per epoch; its augmentation from raw MUSAN; joint and LMFT train every parameter (the CNN
    too); the joint stage starts from the average of the frozen stage's last 2 checkpoints."""
    config = read_yaml(os.path.join(ROOT, "yaml", stage + ".yaml"))
    epochs, frames, global_batch, lr, trains_ssl = WESPEAKER_V4[stage]
    assert (config["max_epoch"], config["max_frames"], config["global_batch"]) == (epochs, frames, global_batch)
    assert config["LR_MHFA"] == config["LR_Transformer"] == lr
    assert (config["sampler"], config["augment_mode"], config["aug_prob"]) == ("utterance", "wespeaker", 0.6)
    assert config["freeze_ssl"] is not trains_ssl
    if trains_ssl:
        assert config["freeze_cnn"] is False and config.get("feature_grad_mult", 1.0) == 1.0
        assert config["layer_grad_mult"] == 0.1 and config["layer_drop"] == 0.05
    assert config.get("initial_model_average", 1) == (2 if stage.endswith("2_joint") else 1)
    header = [line for line in open(os.path.join(ROOT, "yaml", stage + ".yaml")) if line.startswith("#")]
    assert any("Remaining differences" in line for line in header)
