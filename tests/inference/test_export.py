"""TorchScript and ONNX export (inference/export.py): the exported files give the PyTorch model's embeddings
for single inputs of three lengths and for one padded batch, for every kind of front-end."""
import copy

import numpy as np
import onnxruntime
import pytest
import torch
from torchaudio.models import wav2vec2_model

import frontend.kernels
from core.errors import OutputError
from inference.export import ExportableEncoder, export_checked, pad_batch
from synthetic.checkpoints import TINY_WAVLM, write_fairseq_checkpoint
from tests.fakes import device_tolerance, save_self_contained_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
LENGTHS = (6000, 16001, 29999)  # three lengths; the padded batch holds all three


@pytest.fixture(scope="module")
def hubert_base(tmp_path_factory):
    """A Base-type (group-norm CNN, post-norm) fairseq HuBERT: the non-WavLM attention path."""
    config = {k: v for k, v in TINY_WAVLM.items() if not k.startswith("encoder_num_buckets")
              and k != "encoder_max_distance"}
    torch.manual_seed(5)
    path = str(tmp_path_factory.mktemp("hubert") / "hubert.pt")
    write_fairseq_checkpoint(path, "hubert", config, wav2vec2_model(**config, aux_num_out=None).state_dict())
    return path


MODELS = {  # name: (pre-trained checkpoint fixture, model options)
    "wavlm-base-normalized": ("tiny_checkpoint", {"normalize_input": True}),
    "wavlm-large-type": ("prenorm_checkpoint", {}),
    "camhfa": ("tiny_checkpoint", {"model": "CAMHFA", "context": 3}),
    "hubert-base": ("hubert_base", {}),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def encoder(request, tmp_path_factory):
    fixture, options = MODELS[request.param]
    path = tmp_path_factory.mktemp("export") / "m.model"
    return save_self_contained_model(request.getfixturevalue(fixture), path, **options)[0]


def waves(seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in LENGTHS]


def reference(encoder, inputs):
    with torch.no_grad():
        return np.concatenate([encoder(torch.from_numpy(w)[None]).numpy() for w in inputs])


def test_exportable_encoder_is_the_encoder(encoder, device, tmp_path):
    """Before any export: the traceable form equals the encoder on a padded batch (padding content ignored). Device
    tier: on the tier's device, against the encoder on the CPU, and a TorchScript export traced there is checked
    there as tools.export checks it."""
    model = copy.deepcopy(encoder).to(device).eval()
    inputs = waves(1)
    batch, lengths = pad_batch(inputs)
    batch[0, LENGTHS[0]:] = 5.0
    with torch.no_grad():
        got = ExportableEncoder(model)(torch.from_numpy(batch).to(device), torch.from_numpy(lengths).to(device))
    atol, _ = device_tolerance(device, 1e-5, 0)
    np.testing.assert_allclose(got.cpu().numpy(), reference(encoder, inputs), rtol=0, atol=atol)
    if device.type != "cpu":  # on the CPU test_exports_equal_the_pytorch_model covers the exports
        found = export_checked("torchscript", model, str(tmp_path / "m.ts"), inputs, tolerance=10 * atol)
        assert set(found) == {"single", "batch"}


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_exports_equal_the_pytorch_model(encoder, kind, tmp_path):
    inputs = waves()
    path = str(tmp_path / f"m.{kind}")
    found = export_checked(kind, encoder, path, inputs, tolerance=1e-4)
    assert set(found) == {"single", "batch"} and max(found.values()) <= 1e-4
    # the written file, read back here on its own: single inputs of each length and a padded batch whose
    # padding holds noise, in another order than traced
    if kind == "torchscript":
        module = torch.jit.load(path)
        run = lambda wav, n: module(torch.from_numpy(wav), torch.from_numpy(n)).detach().numpy()  # noqa: E731 (a one-line function, kept beside its use)
    else:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda wav, n: session.run(None, {"wav": wav, "lengths": n})[0]  # noqa: E731 (a one-line function, kept beside its use)
    want = reference(encoder, inputs)
    for i, w in enumerate(inputs):
        np.testing.assert_allclose(run(w[None], np.array([len(w)])), want[i:i + 1], rtol=0, atol=1e-4)
    order = [2, 0, 1]
    batch, lengths = pad_batch([inputs[i] for i in order])
    batch[1, lengths[1]:] = np.random.default_rng(2).standard_normal(batch.shape[1] - lengths[1])
    np.testing.assert_allclose(run(batch, lengths), want[order], rtol=0, atol=1e-4)


def test_an_export_that_differs_is_not_written(tiny_checkpoint, tmp_path, monkeypatch):
    """The check can fail: normalising the padded frames along (no mask) changes the padded rows' embeddings
    of a group-norm CNN; the file is then not written."""
    encoder = save_self_contained_model(tiny_checkpoint, tmp_path / "m.model")[0]
    unmasked = frontend.kernels.masked_norm  # the export runs the front-end's masked CNN
    monkeypatch.setattr(frontend.kernels, "masked_norm", lambda x, valid, count, dim, eps: unmasked(
        x, torch.ones_like(valid), torch.full_like(count, x.shape[dim]), dim, eps))
    with pytest.raises(OutputError, match=r"onnx export differs .* padded batch .*m.onnx' was not written"):
        export_checked("onnx", encoder, str(tmp_path / "m.onnx"), waves(), tolerance=1e-4)
    assert not (tmp_path / "m.onnx").exists()
