"""The w2v-BERT 2.0 front-end (frontend/w2vbert.py; its folder reader in frontend/hf.py, the part every front-end
shares in frontend/base.py) on tiny random-weight ``wav2vec2-bert`` folders written by transformers
(synthetic/checkpoints.py ``write_tiny_w2vbert``).

The reference is transformers itself: ``Wav2Vec2BertModel.from_pretrained(folder)`` fed by the folder's
``SeamlessM4TFeatureExtractor``, ``output_hidden_states=True``, on the valid frames. Our front-end starts from the raw
waveform. Its features equal the extractor's to ~1e-5 (tests/frontend/test_fbank.py), so the hidden states are
compared end to end (relative <= 1e-4, measured ~3e-6) and, to isolate the model path, with our own features fed to
transformers' model (<= 1e-5)."""
import copy
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertForCTC, Wav2Vec2BertModel

import trainSpeakerNet
import trainSpeakerNet_Eval
from core.device import autocast_dtype
from core.errors import CheckpointError, ConfigError
from core.options import defaults
from frontend.fbank import w2vbert_features
from frontend.hf import read_hf_folder
from frontend.w2vbert import W2VBertFrontend
from inference import load_model
from inference.export import ExportableEncoder
from models import CAMHFA, MHFA
from models.ssl_frontend import load_ssl_frontend
from SpeakerNet import SpeakerNet
from synthetic.checkpoints import TINY_W2VBERT, write_tiny_w2vbert
from tests.fakes import device_tolerance, run_main, save_self_contained_model
from tests.frontend.test_options import count_block_calls

SMALL = dict(nOut=8, head_nb=2, compression_dim=4)
LENGTHS = [16000, 12345, 7001]  # 49 frames, 37 (an odd fbank count: the extractor's masked half frame), 21


def waves(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def padded(rows, fill=0.0):
    lengths = torch.tensor([len(w) for w in rows])
    batch = torch.full((len(rows), int(lengths.max())), fill)
    for i, w in enumerate(rows):
        batch[i, :len(w)] = torch.from_numpy(w)
    return batch, lengths


def relative(ours, theirs):
    return float((ours - theirs).norm() / theirs.norm())


def reference(folder, **extractor):
    """(transformers' model, the folder's feature extractor), both read by transformers alone."""
    return (Wav2Vec2BertModel.from_pretrained(folder).eval(),
            SeamlessM4TFeatureExtractor.from_pretrained(folder, **extractor))


@pytest.fixture(scope="module", params=["relative_key", "rotary", "relative"])
def folder(request, tmp_path_factory, tiny_w2vbert):
    """w2v-BERT 2.0's relative_key position embeddings (the shared tiny folder), and the other two types the
    model class has."""
    if request.param == "relative_key":
        return tiny_w2vbert
    path = str(tmp_path_factory.mktemp("w2vbert") / request.param)
    # a short Transformer-XL table (32 positions, 5000 released): a 1 s input extends it
    write_tiny_w2vbert(path, seed=6, config=dict(TINY_W2VBERT, position_embeddings_type=request.param,
                                                 max_source_positions=32))
    return path


def test_single_files_give_transformers_hidden_states(folder):
    frontend = load_ssl_frontend(folder).eval()
    model, extractor = reference(folder)
    assert isinstance(frontend, W2VBertFrontend) and frontend.num_layers == TINY_W2VBERT["num_hidden_layers"] + 1
    with torch.no_grad():
        for wav in waves():
            inputs = extractor(wav, sampling_rate=16000, return_tensors="pt")
            want = model(**inputs, output_hidden_states=True).hidden_states
            ours = frontend(torch.from_numpy(wav)[None])  # [1, L+1, T, D]
            frames = int(inputs["attention_mask"].sum())
            assert ours.shape == (1, len(want), frames, TINY_W2VBERT["hidden_size"])
            for layer, hidden in enumerate(want):
                assert relative(ours[0, layer], hidden[0, :frames]) <= 1e-4, f"layer {layer}"
            features, _ = w2vbert_features(torch.from_numpy(wav)[None], None)  # the model path alone
            same = model(input_features=features, output_hidden_states=True).hidden_states
            for layer, hidden in enumerate(same):
                assert relative(ours[0, layer], hidden[0]) <= 1e-5, f"layer {layer}"


def test_a_padded_batch_gives_transformers_hidden_states_and_its_rows_alone(folder):
    frontend = load_ssl_frontend(folder).eval()
    model, extractor = reference(folder, padding_value=1.0)  # the released folder pads with 1: masked anyway
    rows = waves(seed=1)
    batch, lengths = padded(rows, fill=0.3)  # whatever pads a row must not matter
    with torch.no_grad():
        inputs = extractor(rows, sampling_rate=16000, return_tensors="pt", padding=True)
        want = model(**inputs, output_hidden_states=True).hidden_states
        ours, frames = frontend(batch, lengths)
        assert frames.tolist() == inputs["attention_mask"].sum(1).tolist() and ours.shape[2] == int(frames.max())
        torch.testing.assert_close(ours[:, 0], want[0][:, :ours.shape[2]], atol=1e-5, rtol=1e-4)  # padding: 0
        for i, wav in enumerate(rows):
            n = int(frames[i])
            alone = frontend(torch.from_numpy(wav)[None])[0]
            torch.testing.assert_close(ours[i, :, :n], alone, atol=1e-5, rtol=1e-5)
            for layer, hidden in enumerate(want):
                assert relative(ours[i, layer, :n], hidden[i, :n]) <= 1e-4, f"row {i} layer {layer}"


def test_training_after_evaluation_in_inference_mode(folder):
    """Evaluation between epochs runs in inference mode; position embeddings it makes (rotary's cache,
    Transformer-XL's table, extended by a long input) must not end up in the next training step's autograd."""
    model = MHFA.MainModel(folder, **SMALL).eval()
    wav = 0.1 * torch.randn(2, 16000)
    with torch.inference_mode():
        model(wav)
        model(wav[:, :8000])
    model.train()
    model(wav[:, :8000]).sum().backward()
    assert model.frontend.model.encoder.layers[0].self_attn.linear_q.weight.grad is not None


def test_a_task_models_encoder_loads_and_its_head_is_set_aside(tmp_path):
    """A Wav2Vec2BertForCTC folder: the encoder under 'wav2vec2_bert.', the CTC head (and masked_spec_embed) not
    part of it."""
    torch.manual_seed(0)
    task = Wav2Vec2BertForCTC(Wav2Vec2BertConfig(**TINY_W2VBERT, vocab_size=12)).eval()
    task.save_pretrained(tmp_path)
    SeamlessM4TFeatureExtractor().save_pretrained(tmp_path)
    frontend = load_ssl_frontend(str(tmp_path)).eval()
    wav = torch.from_numpy(waves([8000])[0])[None]
    features, _ = w2vbert_features(wav, None)
    with torch.no_grad():
        want = task.wav2vec2_bert(input_features=features, output_hidden_states=True).hidden_states
        torch.testing.assert_close(frontend(wav), torch.stack(want, dim=1), atol=1e-5, rtol=1e-5)


def test_folder_errors_name_the_file_and_the_fix(tmp_path, tiny_w2vbert):
    folder = tmp_path / "w2v"
    shutil.copytree(tiny_w2vbert, folder)
    with pytest.raises(CheckpointError, match="load_ssl_frontend"):
        read_hf_folder(str(folder))  # the torchaudio reader points to the right door
    features = (folder / "preprocessor_config.json").read_text()
    (folder / "preprocessor_config.json").write_text(features.replace('"stride": 2', '"stride": 3'))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json.*80 x 3.*feature_projection_input_dim=160"):
        load_ssl_frontend(str(folder))
    (folder / "preprocessor_config.json").write_text(features.replace("SeamlessM4T", "Whisper"))
    with pytest.raises(CheckpointError, match="WhisperFeatureExtractor"):
        load_ssl_frontend(str(folder))
    os.remove(folder / "preprocessor_config.json")
    with pytest.raises(CheckpointError, match=r"w2v.*has no preprocessor_config\.json.*snapshot_download"):
        load_ssl_frontend(str(folder))
    (folder / "preprocessor_config.json").write_text(features)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    with pytest.raises(CheckpointError, match=r"does not match.*missing tensors.*encoder\.layers\.2\."):
        load_ssl_frontend(str(folder))
    partial = load_ssl_frontend(str(folder), allow_partial_checkpoint=True)
    assert partial.num_layers == 4


def test_options_freezing_groups_and_errors(tiny_w2vbert):
    frozen = MHFA.MainModel(tiny_w2vbert, freeze_ssl=True, **SMALL).train()
    assert not any(p.requires_grad for p in frozen.frontend.parameters()) and not frozen.frontend.model.training
    assert [g["name"] for g in frozen.parameter_groups(5e-3, 2e-5, 1.0)] == ["MHFA"]
    wav = 0.1 * torch.randn(2, 8000)
    assert frozen.frontend(wav).grad_fn is None
    model = MHFA.MainModel(tiny_w2vbert, freeze_cnn=False, **SMALL)
    groups = model.parameter_groups(5e-3, 2e-5, 0.5)
    layers = TINY_W2VBERT["num_hidden_layers"]
    assert [g["name"] for g in groups] == ["MHFA", "frontend.input"] + [f"transformer.{i}" for i in range(layers)]
    assert [g["lr"] for g in groups[2:]] == [2e-5 * 0.5 ** i for i in range(layers)]  # one group per conformer layer
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.frontend.model.feature_projection.parameters()}
    default = MHFA.MainModel(tiny_w2vbert, **SMALL)  # freeze_cnn: the feature projection stays fixed
    assert [g["name"] for g in default.parameter_groups(5e-3, 2e-5, 1.0)][1] == "transformer.0"
    with pytest.raises(ConfigError, match="feature_grad_mult=0.1.*w2v-BERT 2.0 has none"):
        load_ssl_frontend(tiny_w2vbert, freeze_cnn=False, feature_grad_mult=0.1)
    with pytest.raises(ValueError, match="559 samples is shorter than 560"):
        default.frontend(torch.zeros(1, 559))
    with pytest.raises(ValueError, match="500 samples is shorter than 560"):
        default.frontend(torch.zeros(2, 8000), torch.tensor([8000, 500]))


def test_layer_drop_and_grad_checkpointing(tiny_w2vbert):
    frontend = load_ssl_frontend(tiny_w2vbert, layer_drop=0.5).train()
    assert load_ssl_frontend(tiny_w2vbert).layer_drop == TINY_W2VBERT["layerdrop"] and frontend.layer_drop == 0.5
    calls = count_block_calls(frontend)
    wav = 0.1 * torch.randn(1, 8000)
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [frontend(wav) for _ in range(10)]
    assert 0 < sum(calls) < 20
    assert sum(torch.equal(o[:, i + 1], o[:, i]) for o in outs for i in range(2)) == 20 - sum(calls)
    results = []
    for flag in (False, True):
        frontend = load_ssl_frontend(tiny_w2vbert, grad_checkpointing=flag).train()
        calls = count_block_calls(frontend)
        out = frontend(wav)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad for p in frontend.model.encoder.parameters()], list(calls)))
    (out0, grads0, calls0), (out1, grads1, calls1) = results
    assert calls0 == [1, 1] and calls1 == [2, 2]  # recomputed once in backward
    torch.testing.assert_close(out1, out0)
    for a, b in zip(grads1, grads0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("plugin", [MHFA, CAMHFA], ids=["MHFA", "CA-MHFA"])
def test_back_ends_embed_padded_batches_as_rows_alone_in_every_inference_path(tiny_w2vbert, plugin):
    """``auto`` (streaming layer sums), ``reference`` (stacked layers), frozen, and bfloat16 autocast (the frozen
    blocks' reduced-precision weight copies)."""
    torch.manual_seed(0)
    model = plugin.MainModel(tiny_w2vbert, freeze_ssl=True, **SMALL).eval()
    rows = waves(seed=2)
    batch, lengths = padded(rows)
    with torch.inference_mode():
        auto = model(batch, lengths)
        alone = torch.cat([model(torch.from_numpy(w)[None]) for w in rows])
        torch.testing.assert_close(auto, alone, atol=1e-5, rtol=1e-4)
        model.frontend.kernels = "reference"
        torch.testing.assert_close(model(batch, lengths), auto, atol=1e-5, rtol=1e-4)
        model.frontend.kernels = "auto"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch, lengths).float()
    assert model.frontend.derived.peek("blocks.reduced") is not None
    assert (low - auto).abs().max() <= 0.1 * auto.abs().max()


def test_on_the_device_as_on_the_cpu(tiny_w2vbert, device):
    """Device tier: a padded batch's layers (features in float64 on the device) as on the CPU, and MHFA's
    embeddings under the device's autocast within its rounding."""
    cpu = MHFA.MainModel(tiny_w2vbert, **SMALL).eval()
    moved = copy.deepcopy(cpu).to(device)
    batch, lengths = padded(waves(seed=4))
    atol, rtol = device_tolerance(device, 1e-5, 1e-4)
    with torch.no_grad():
        want, frames = cpu.frontend(batch, lengths)
        got, got_frames = moved.frontend(batch.to(device), lengths.to(device))
        assert got_frames.tolist() == frames.tolist()
        torch.testing.assert_close(got.cpu(), want, atol=atol, rtol=rtol)
        embeddings = cpu(batch, lengths)
        with torch.autocast(device.type, dtype=autocast_dtype(device)):
            low = moved(batch.to(device), lengths.to(device)).float().cpu()
    assert (low - embeddings).abs().max() <= 0.1 * embeddings.abs().max()


def test_the_regulariser_anchors_every_trainable_conformer_tensor(tiny_w2vbert):
    net = SpeakerNet(**{**defaults(), **SMALL, "nClasses": 3, "pretrained_model_path": tiny_w2vbert,
                        "weight_finetuning_reg": 0.01})
    trainable = {n for n, p in net.encoder.frontend.named_parameters() if p.requires_grad}
    assert set(net._reg_params) == trainable and trainable and not net._reg_pieces
    assert float(net.regulariser().detach()) == 0.0
    with torch.no_grad():
        net.encoder.frontend.model.encoder.layers[1].self_attn.linear_q.weight.add_(0.01)
    assert float(net.regulariser().detach()) > 0.0


def test_the_model_file_evaluates_without_the_pretrained_folder(tmp_path, tiny_w2vbert):
    folder = tmp_path / "w2v"
    shutil.copytree(tiny_w2vbert, folder)
    encoder, _ = save_self_contained_model(str(folder), tmp_path / "m.model")
    shutil.rmtree(folder)
    wav = waves([20000], seed=3)[0]
    model = load_model(tmp_path / "m.model", device="cpu")
    assert isinstance(model.encoder.frontend, W2VBertFrontend)
    with torch.no_grad():
        want = encoder(torch.from_numpy(wav)[None]).numpy()
    np.testing.assert_allclose(model.embed(wav).embeddings, want, atol=1e-6, rtol=1e-5)


def test_export_says_it_has_no_traceable_w2vbert_path(tiny_w2vbert):
    with pytest.raises(ConfigError, match="W2VBertFrontend.*no traceable path"):
        ExportableEncoder(MHFA.MainModel(tiny_w2vbert, **SMALL))


def test_mhfa_trains_through_the_command_line_and_its_model_file_evaluates(tiny_config, tiny_w2vbert, tmp_path):
    """A few steps of the tiny recipe with the tiny w2v-BERT instead of WavLM (the regulariser, mixed precision and
    LayerDrop on); then the eval command scores its model file with the pre-trained folder gone (the file holds the
    architecture)."""
    cfg, _ = tiny_config
    folder = tmp_path / "w2v"
    shutil.copytree(tiny_w2vbert, folder)
    save = tmp_path / "run"
    train = run_main(trainSpeakerNet, "--config", cfg, "--pretrained_model_path", str(folder), "--max_epoch", "1",
                     "--save_path", str(save), "--augment", "false", "--weight_finetuning_reg", "0.01",
                     "--mixedprec", "true", "--layer_drop", "0.1")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "w2v-BERT front-end" in train.stderr and "transformer.1" in train.stderr
    model_file = save / "model" / "model000000001.model"
    header = torch.load(model_file, weights_only=True)["frontend"]
    assert header["family"] == "wav2vec2-bert" and header["features"] == {"num_mel_bins": 80, "stride": 2}
    shutil.rmtree(folder)
    data = yaml.safe_load(open(cfg))
    scored = run_main(trainSpeakerNet_Eval, "--eval", "--initial_model", str(model_file), "--test_list",
                      data["test_list"], "--test_path", data["test_path"])
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert scored.stdout.startswith("EER ")
