"""tools/export.py: a model file alone is exported to TorchScript and ONNX, each checked against the PyTorch
model with its largest difference printed; the files give the API's embeddings."""
import os
import re
import shutil

import numpy as np
import onnxruntime
import pytest
import torch

from inference import load_model
from tests.fakes import save_self_contained_model
from tools.export import main as export_main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def test_export_a_model_file_alone(tiny_checkpoint, tmp_path, capsys):
    pretrained = tmp_path / "pretrained.pt"
    shutil.copy(tiny_checkpoint, pretrained)
    save_self_contained_model(str(pretrained), tmp_path / "m.model", normalize_input=True)
    os.remove(pretrained)  # the model file is all the export reads
    out = str(tmp_path / "exported")
    export_main(["--initial_model", str(tmp_path / "m.model"), "--out", out, "--check_seconds", "0.5", "1.2", "2"])
    lines = capsys.readouterr().out.splitlines()
    # ONNX first: TorchScript is traced on --device; the third line describes the inputs (checked below)
    for kind, line in zip(["onnx", "torchscript"], lines[:2], strict=True):
        found = re.fullmatch(rf"{kind} {re.escape(out)}\.(pt|onnx): largest difference to the PyTorch model (\S+) "
                             r"\(single inputs of 0.5, 1.2, 2 s: \S+; one padded batch of 3: \S+\)", line)
        assert found and float(found.group(2)) <= 1e-4, line
    assert lines[2].startswith("inputs: wav [batch, samples] float32, 16 kHz mono, raw waveform (normalize_input "
                               "True: normalised inside); lengths [batch] int64; output: embedding [batch, 16]")
    model = load_model(tmp_path / "m.model", device="cpu")
    wave = (0.1 * np.random.default_rng(1).standard_normal(20000)).astype(np.float32)
    with torch.no_grad():
        want = model.encoder(torch.from_numpy(wave)[None]).numpy()
    wav, lengths = wave[None], np.array([len(wave)])
    scripted = torch.jit.load(out + ".pt")(torch.from_numpy(wav), torch.from_numpy(lengths)).detach().numpy()
    session = onnxruntime.InferenceSession(out + ".onnx", providers=["CPUExecutionProvider"])
    for got in (scripted, session.run(None, {"wav": wav, "lengths": lengths})[0]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_errors_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--initial_model is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--check_seconds" in out and "onnxruntime" in out
