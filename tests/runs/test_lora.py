"""LoRA through the commands (runs/train.py, runs/trainer.py, model_files.py, inference.load_model, tools.export) on
the tiny WavLM (our adapter on its merged projection) and the tiny w2v-BERT 2.0 (peft's): ``lora_rank: 4`` trains
the adapters, MHFA and the loss only (the count is logged); with ``LR_MHFA: 0`` the embeddings still change, so the
adapters learn; the model file evaluates with its YAML and pre-trained checkpoint deleted, merged; a run interrupted
and resumed ends with the uninterrupted run's adapters; a stage with ``lora_rank: 0`` starting from a LoRA model
file merges the adapters and fine-tunes every weight."""
import os
import shutil

import pytest
import torch

import trainSpeakerNet
import trainSpeakerNet_Eval
from core.options import defaults
from frontend.lora import is_adapter_key
from inference import load_model
from model_files import apply_model_file
from runs.trainer import ModelTrainer
from SpeakerNet import SpeakerNet
from tools import export


def write_yaml(path, demo, pretrained, save, **over):
    options = {"max_frames": 50, "eval_frames": 50, "num_eval": 2, "batch_size": 4, "nDataLoaderThread": 0,
               "max_epoch": 1, "nClasses": 6, "nOut": 16, "head_nb": 2, "compression_dim": 8, "LR_MHFA": 1e-3,
               "LR_Transformer": 1e-3, "lora_rank": 4, "weight_finetuning_reg": 0.0,
               "pretrained_model_path": pretrained, "save_path": save, "train_list": demo["train_list"],
               "train_path": demo["train_dir"], **over}
    path.write_text("".join(f"{k}: {v}\n" for k, v in options.items()))
    return str(path)


def eval_options(demo, save_path):
    return ["--eval", "--test_list", demo["trials"], "--test_path", demo["test_dir"], "--embedding_cache", "false",
            "--nDataLoaderThread", "0", "--save_path", str(save_path)]


@pytest.mark.parametrize("backbone", ["wavlm", pytest.param("w2vbert", marks=pytest.mark.slow)])
def test_lora_trains_the_adapters_and_the_file_evaluates_alone_merged(backbone, small_demo, tiny_w2vbert, tmp_path,
                                                                     capsys):
    source = small_demo["checkpoint"] if backbone == "wavlm" else tiny_w2vbert
    pretrained = tmp_path / os.path.basename(source)
    (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, pretrained)
    cfg = write_yaml(tmp_path / "run.yaml", small_demo, pretrained, tmp_path / "run", LR_MHFA=0.0)
    trainSpeakerNet.main(["--config", cfg])
    log = capsys.readouterr().err
    model = str(tmp_path / "run" / "model" / "model000000001.model")
    state = torch.load(model, weights_only=True)["model"]
    adapters = {k: v for k, v in state.items() if is_adapter_key(k)}
    backend = sum(v.numel() for k, v in state.items() if k.startswith(("encoder.backend.", "loss_fn.")))
    counted = sum(v.numel() for k, v in adapters.items() if not k.endswith(".blocks"))
    assert f"{counted + backend} trainable" in log  # adapters, MHFA and the loss; nothing else
    assert all(float(v.abs().max()) > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0: it learned
    # the embeddings moved with MHFA fixed (LR_MHFA 0): the same file with its adapters zeroed embeds differently
    zeroed = tmp_path / "zeroed.model"
    obj = torch.load(model, weights_only=True)
    obj["model"] = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in obj["model"].items()}
    torch.save(obj, zeroed)
    wav = torch.randn(16000).numpy() * 0.1
    trained = load_model(model, device="cpu")
    assert not any(is_adapter_key(k) for k in trained.encoder.state_dict())  # load_model merges
    moved = trained.embed(wav).embeddings - load_model(str(zeroed), device="cpu").embed(wav).embeddings
    assert abs(moved).max() > 1e-4
    # unmerged (the trainer's own encoder, as its epoch evaluation runs it) equals merged
    net_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    config = apply_model_file({**defaults(), "initial_model": model})
    unmerged = SpeakerNet(**{**config, "weight_finetuning_reg": 0.0}).encoder.eval()
    unmerged.load_state_dict(net_state)
    with torch.no_grad():
        x = torch.as_tensor(wav)[None]
        assert torch.allclose(unmerged(x), trained.encoder(x), atol=1e-5, rtol=1e-5)
    os.remove(cfg)
    (shutil.rmtree if os.path.isdir(pretrained) else os.remove)(pretrained)
    capsys.readouterr()
    trainSpeakerNet_Eval.main(["--initial_model", model, *eval_options(small_demo, tmp_path / "eval")])
    assert capsys.readouterr().out.startswith("EER ")
    if backbone == "wavlm":  # export runs the merged model (a parametrization could not be traced)
        export.main(["--initial_model", model, "--out", str(tmp_path / "m"), "--formats", "torchscript",
                     "--check_seconds", "1"])


def test_a_lora_run_interrupted_and_resumed_ends_with_the_same_adapters(small_demo, tmp_path, monkeypatch):
    cfg = write_yaml(tmp_path / "run.yaml", small_demo, small_demo["checkpoint"], tmp_path / "unused",
                     save_every_steps=1)
    trainSpeakerNet.main(["--config", cfg, "--save_path", str(tmp_path / "whole")])
    step, count = ModelTrainer.optimizer_step, []

    def interrupted(self):
        step(self)
        count.append(1)
        if len(count) == 2:  # after the step-1 checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(ModelTrainer, "optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainSpeakerNet.main(["--config", cfg, "--save_path", str(tmp_path / "cut")])
    monkeypatch.undo()
    trainSpeakerNet.main(["--config", cfg, "--save_path", str(tmp_path / "cut")])
    final = torch.load(tmp_path / "cut" / "model" / "model000000001.model", weights_only=True)["model"]
    want = torch.load(tmp_path / "whole" / "model" / "model000000001.model", weights_only=True)["model"]
    assert any(is_adapter_key(k) for k in want) and all(torch.equal(final[k], want[k]) for k in want)


def test_a_full_fine_tuning_stage_merges_the_lora_stages_adapters(small_demo, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "s1.yaml", small_demo, small_demo["checkpoint"], tmp_path / "s1")
    trainSpeakerNet.main(["--config", cfg])
    capsys.readouterr()
    trainSpeakerNet.main(["--config", cfg, "--lora_rank", "0", "--initial_model_from", str(tmp_path / "s1"),
                          "--save_path", str(tmp_path / "s2")])
    assert "LoRA adapters merged into the front-end's weights (rank 4, scaling 2)" in capsys.readouterr().err
    first = torch.load(tmp_path / "s1" / "model" / "model000000001.model", weights_only=True)["model"]
    second = torch.load(tmp_path / "s2" / "model" / "model000000001.model", weights_only=True)["model"]
    assert not any(is_adapter_key(k) for k in second)
    key = "encoder.frontend.model.encoder.transformer.layers.0.attention.attention.in_proj_weight"
    base = first[key.replace("in_proj_weight", "parametrizations.in_proj_weight.original")]
    assert not torch.equal(second[key], base)  # every weight trains now (from the merged ones)
