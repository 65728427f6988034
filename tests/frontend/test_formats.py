"""Every checkpoint format loads and matches its reference layer by layer (<= 1e-4 max abs): official WavLM
(frontend/formats.py), fairseq (frontend/fairseq.py) and Hugging Face (frontend/hf.py), told apart by
frontend/detect.py.

fairseq files are written by our own writer and checked against a hand-written
forward pass over the fairseq-named tensors (independent of torchaudio). Hugging
Face folders are written by ``transformers`` (test-only dependency), whose
``output_hidden_states`` are the reference.
"""
import json

import pytest
import torch
import torch.nn.functional as F
import transformers
from torchaudio.models import wav2vec2_model

from core.errors import CheckpointError
from frontend.ssl_frontend import load_ssl_frontend
from synthetic.checkpoints import write_fairseq_checkpoint

TINY = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 3, 2)],
            extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
            encoder_attention_dropout=0.0, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
            encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0)
PRENORM = dict(TINY, extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True,
               encoder_num_layers=3)
ATOL = 1e-4


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter off its initial value (so swapped norms or biases show)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def write_fairseq(path, family, config, layout="modern", finetuned=False, seed=0):
    model = perturb(wav2vec2_model(**config, aux_num_out=None), seed)
    write_fairseq_checkpoint(str(path), family, config, model.state_dict(), layout=layout, finetuned=finetuned)
    return str(path)


def fairseq_reference(sd, config, wav):
    """All layers [B, L+1, T, D] computed by hand from fairseq-named tensors."""
    x = wav[:, None]
    for j, (channels, _, stride) in enumerate(config["extractor_conv_layer_config"]):
        p = f"feature_extractor.conv_layers.{j}."
        x = F.conv1d(x, sd[p + "0.weight"], sd.get(p + "0.bias"), stride=stride)
        if config["extractor_mode"] == "layer_norm":
            x = F.layer_norm(x.transpose(1, 2), (channels,), sd[p + "2.1.weight"], sd[p + "2.1.bias"]).transpose(1, 2)
        elif j == 0:
            x = F.group_norm(x, channels, sd[p + "2.weight"], sd[p + "2.bias"])
        x = F.gelu(x)
    x = x.transpose(1, 2)  # [B, T, C]
    x = F.linear(F.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"]),
                 sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    g, v = sd["encoder.pos_conv.0.weight_g"], sd["encoder.pos_conv.0.weight_v"]
    k = config["encoder_pos_conv_kernel"]
    pos = F.conv1d(x.transpose(1, 2), g * v / v.norm(dim=(0, 1), keepdim=True), sd["encoder.pos_conv.0.bias"],
                   padding=k // 2, groups=config["encoder_pos_conv_groups"])
    x = x + F.gelu(pos[:, :, :-1] if k % 2 == 0 else pos).transpose(1, 2)
    prenorm = config["encoder_layer_norm_first"]
    if not prenorm:
        x = F.layer_norm(x, x.shape[-1:], sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    layers = [x]
    for i in range(config["encoder_num_layers"]):
        def lin(t, n, p=f"encoder.layers.{i}."):
            return F.linear(t, sd[p + n + ".weight"], sd[p + n + ".bias"])

        def norm(t, n, p=f"encoder.layers.{i}."):
            return F.layer_norm(t, t.shape[-1:], sd[p + n + ".weight"], sd[p + n + ".bias"])

        def attn(t):
            b, n, d = t.shape
            q, kk, vv = (lin(t, f"self_attn.{w}_proj").view(b, n, config["encoder_num_heads"], -1).transpose(1, 2)
                         for w in "qkv")
            return lin(F.scaled_dot_product_attention(q, kk, vv).transpose(1, 2).reshape(b, n, d), "self_attn.out_proj")

        def ffn(t):
            return lin(F.gelu(lin(t, "fc1")), "fc2")

        if prenorm:
            x = x + attn(norm(x, "self_attn_layer_norm"))
            x = x + ffn(norm(x, "final_layer_norm"))
        else:
            x = norm(x + attn(x), "self_attn_layer_norm")
            x = norm(x + ffn(x), "final_layer_norm")
        layers.append(x)
    return torch.stack(layers, dim=1)


FAIRSEQ_CASES = [("hubert", TINY, "modern", False), ("hubert", PRENORM, "modern", False),
                 ("wav2vec2", TINY, "modern", True), ("wav2vec2", PRENORM, "legacy", False),
                 ("hubert", PRENORM, "legacy", True), ("wav2vec2", TINY, "modern", False)]


@pytest.mark.parametrize("family,config,layout,finetuned", FAIRSEQ_CASES)
def test_fairseq_matches_hand_written_reference(tmp_path, family, config, layout, finetuned):
    path = write_fairseq(tmp_path / "m.pt", family, config, layout, finetuned)
    frontend = load_ssl_frontend(path, trust_checkpoint=layout == "legacy").eval()
    obj = torch.load(path, weights_only=False)
    prefix = "w2v_encoder.w2v_model." if finetuned else ""
    sd = {k[len(prefix):]: v for k, v in obj["model"].items() if k.startswith(prefix)}
    wav = torch.randn(2, 4000)
    with torch.no_grad():
        out, ref = frontend(wav), fairseq_reference(sd, config, wav)
    assert frontend.family == family
    assert out.shape == ref.shape == (2, config["encoder_num_layers"] + 1, ref.shape[2], 32)
    assert (out - ref).abs().max() <= ATOL


def test_fairseq_legacy_needs_trust_and_finetuned_needs_w2v_args(tmp_path):
    legacy = write_fairseq(tmp_path / "legacy.pt", "hubert", TINY, layout="legacy")
    with pytest.raises(CheckpointError, match=r"legacy\.pt.*trust_checkpoint"):
        load_ssl_frontend(legacy)
    obj = torch.load(write_fairseq(tmp_path / "ft.pt", "wav2vec2", TINY, finetuned=True))
    obj["cfg"]["model"]["w2v_args"] = None
    torch.save(obj, tmp_path / "no_args.pt")
    with pytest.raises(CheckpointError, match=r"no_args\.pt.*w2v_args.*w2v_path='pretrained\.pt'"):
        load_ssl_frontend(str(tmp_path / "no_args.pt"))


def test_fairseq_unused_missing_and_misshaped_tensors(tmp_path, caplog):
    obj = torch.load(write_fairseq(tmp_path / "m.pt", "hubert", TINY))
    good = load_ssl_frontend(str(tmp_path / "m.pt")).eval()
    obj["model"]["encoder.layers.0.extra.weight"] = torch.zeros(1)
    del obj["model"]["encoder.layers.1.fc2.bias"]
    torch.save(obj, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt.*encoder\.layers\.0\.extra\.weight.*"
                                              r"encoder\.transformer\.layers\.1\.feed_forward\.output_dense\.bias"):
        load_ssl_frontend(str(tmp_path / "partial.pt"))
    partial = load_ssl_frontend(str(tmp_path / "partial.pt"), allow_partial_checkpoint=True).eval()
    assert "encoder.layers.0.extra.weight" in caplog.text
    wav = torch.randn(1, 4000)
    with torch.no_grad():  # everything before the missing bias is identical
        assert (partial(wav)[:, :2] - good(wav)[:, :2]).abs().max() <= ATOL
    obj["cfg"]["model"]["encoder_ffn_embed_dim"] = 48
    torch.save(obj, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape mismatches.*fc|shape mismatches.*intermediate_dense"):
        load_ssl_frontend(str(tmp_path / "shape.pt"), allow_partial_checkpoint=True)


@pytest.mark.parametrize("edit,message", [({"_name": "data2vec_audio"}, "data2vec_audio"),
                                          ({"layer_type": "conformer"}, "conformer"),
                                          ({"encoder_layers": 3}, "missing tensors")])
def test_fairseq_unsupported_configs(tmp_path, edit, message):
    obj = torch.load(write_fairseq(tmp_path / "m.pt", "wav2vec2", TINY))
    obj["cfg"]["model"].update(edit)
    del obj["model"]["quantizer.vars"]  # data2vec has no quantizer; keep the family decided by the name
    torch.save(obj, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=f"edited.pt.*{message}"):
        load_ssl_frontend(str(tmp_path / "edited.pt"))


def test_original_mhfa_model_file_is_pointed_to_initial_model(tmp_path):
    torch.save({"__S__.backend.weights_k": torch.ones(3), "__L__.weight": torch.zeros(2, 2)}, tmp_path / "o.model")
    with pytest.raises(CheckpointError, match="initial_model"):
        load_ssl_frontend(str(tmp_path / "o.model"))


# ----------------------------------------------------------------------------- Hugging Face

HF_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16, 16),
             conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
HF_PRENORM = dict(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True, num_hidden_layers=3)
HF_MODELS = {"wavlm": ("WavLMConfig", "WavLMModel", dict(num_buckets=16, max_bucket_distance=64)),
             "hubert": ("HubertConfig", "HubertModel", {}), "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {})}


def hf_model(family, prenorm, model_class=None, seed=0):
    config_class, base_class, extra = HF_MODELS[family]
    config = getattr(transformers, config_class)(**dict(HF_KW, **extra, **(HF_PRENORM if prenorm else {})))
    return perturb(getattr(transformers, model_class or base_class)(config), seed)


@pytest.mark.parametrize("prenorm", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("family", sorted(HF_MODELS))
def test_hf_folder_matches_transformers_hidden_states(tmp_path, family, prenorm):
    model = hf_model(family, prenorm)
    model.save_pretrained(tmp_path)
    frontend = load_ssl_frontend(str(tmp_path)).eval()
    wav = torch.randn(2, 4000)
    with torch.no_grad():
        out = frontend(wav)
        ref = model(wav, output_hidden_states=True)
    num_layers = HF_PRENORM["num_hidden_layers"] if prenorm else HF_KW["num_hidden_layers"]
    assert frontend.family == family and out.shape[1] == len(ref.hidden_states) == num_layers + 1
    for i, hidden in enumerate(ref.hidden_states):
        assert (out[:, i] - hidden).abs().max() <= ATOL, f"layer {i}"
    if prenorm:  # REFERENCE §1: our last layer is the raw last block; HF's output applies the final norm
        final_norm = frontend.model.encoder.transformer.layer_norm
        assert (final_norm(out[:, -1]) - ref.last_hidden_state).abs().max() <= ATOL
        assert (out[:, -1] - ref.last_hidden_state).abs().max() > 1e-2


def test_hf_task_model_bin_weights_and_heads(tmp_path):
    """A Wav2Vec2ForCTC saved as pytorch_model.bin: encoder under 'wav2vec2.', CTC head ignored."""
    model = hf_model("wav2vec2", False, "Wav2Vec2ForCTC")
    model.config.to_json_file(str(tmp_path / "config.json"))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    frontend = load_ssl_frontend(str(tmp_path)).eval()
    wav = torch.randn(1, 4000)
    with torch.no_grad():
        ref = model.wav2vec2(wav, output_hidden_states=True).hidden_states
        assert (frontend(wav) - torch.stack(ref, dim=1)).abs().max() <= ATOL


def test_hf_folder_errors(tmp_path):
    hf_model("hubert", False).save_pretrained(tmp_path / "ok")
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"no_weights.*no weights.*model\.safetensors"):
        load_ssl_frontend(str(no_weights))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty.*no config\.json"):
        load_ssl_frontend(str(tmp_path / "empty"))
    (tmp_path / "ok" / "config.json").write_text(json.dumps(dict(config, model_type="bert")))
    with pytest.raises(CheckpointError, match=r"model_type 'bert'"):
        load_ssl_frontend(str(tmp_path / "ok"))
    (tmp_path / "ok" / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    with pytest.raises(CheckpointError, match=r"Hugging Face folder.*missing tensors"):
        load_ssl_frontend(str(tmp_path / "ok"))
    weights = tmp_path / "ok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_ssl_frontend(str(tmp_path / "ok"))
