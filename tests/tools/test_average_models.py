"""tools/average_models.py: the mean of the newest checkpoints, a model file that loads like any other."""
import os

import pytest
import torch

from core.options import defaults
from model_files import apply_model_file, load_model_state
from SpeakerNet import SpeakerNet
from tests.fakes import make_net, save_self_contained_model
from tools.average_models import main as average_main


def test_average_of_the_last_checkpoints(tiny_checkpoint, tmp_path, capsys):
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    states = []
    for epoch in (1, 2, 3):
        net = make_net(tiny_checkpoint)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(epoch * 0.01)
        states.append(net.state_dict())
        torch.save({"model": net.state_dict(), "epoch": epoch}, model_dir / f"model{epoch:09d}.model")
    out = str(tmp_path / "avg.model")
    average_main(["--save_path", str(tmp_path / "run"), "--last", "2", "--out", out])
    assert "averaged model written to" in capsys.readouterr().out
    averaged = make_net(tiny_checkpoint)
    load_model_state(averaged, out)  # strict: every tensor there
    for key, value in averaged.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[1][key] + states[2][key]) / 2)
    with pytest.raises(SystemExit) as exit_info:
        average_main(["--save_path", str(tmp_path / "run"), "--last", "5", "--out", out])
    assert exit_info.value.code == 2 and "holds 3 checkpoints" in capsys.readouterr().err
    other = tmp_path / "other.model"
    torch.save({"model": make_net(tiny_checkpoint, nOut=6).state_dict()}, other)
    with pytest.raises(SystemExit):
        average_main(["--models", str(model_dir / "model000000001.model"), str(other), "--out", out])
    assert "does not hold the same tensors" in capsys.readouterr().err and os.path.exists(out)


def test_the_average_of_self_contained_files_is_self_contained(tiny_checkpoint, tmp_path):
    files = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.model"
        save_self_contained_model(tiny_checkpoint, path, head_nb=3)
        obj = torch.load(path, weights_only=True)
        obj["model"] = {k: v + seed * 0.01 if v.is_floating_point() else v for k, v in obj["model"].items()}
        torch.save(obj, path)
        files.append(str(path))
    out = str(tmp_path / "avg.model")
    average_main(["--models", *files, "--out", out])
    resolved = apply_model_file({**defaults(), "initial_model": out}, {})
    assert resolved["head_nb"] == 3 and resolved["pretrained_model_path"] == ""
    net = SpeakerNet(**{**resolved, "weight_finetuning_reg": 0.0})
    load_model_state(net, out)
    first = torch.load(files[0], weights_only=True)["model"]
    key = "encoder.backend.pooling_fc.weight"
    torch.testing.assert_close(net.state_dict()[key], first[key] + 0.005)
