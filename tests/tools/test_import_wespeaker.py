"""tools/import_wespeaker.py: a wespeaker SSL + MHFA checkpoint becomes a model file giving wespeaker's embeddings.

The checkpoints here are written as wespeaker_ssl_public's training writes them (train_hubert.py wraps the model as
``speaker_extractor`` next to ``projection``; DDP adds ``module.``): official WavLM tensors under ``model.``, MHFA
under ``back_end.``. The reference embedding is recomputed here as wespeaker's ``WavLM_MHFA.forward`` and
``ssl_backend.MHFA.forward`` do it (first 20 s; [B, D, T, L+1] layout; softmaxes over layers and over time).
"""
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from torchaudio.models import wavlm_model

import trainSpeakerNet_Eval
from frontend.formats import wavlm_cfg_to_torchaudio
from frontend.names import wavlm_state_to_torchaudio
from inference import load_model
from tests.fakes import run_main
from tools import import_wespeaker

HEADS, COMPRESSION, EMBED, CLASSES, K = 4, 128, 16, 5, 3
# CA-MHFA (G_MHFA_Conv2D): his head_nb 12, group 3 -> group_len 4, a Conv2d over 5 frames
CA_HEAD_NB, CA_GROUP = 12, 3


def official(checkpoint):
    obj = torch.load(checkpoint, weights_only=True)
    return obj["cfg"], {k: v for k, v in obj["model"].items() if k != "mask_emb"}  # wespeaker's WavLM has none


def write_wespeaker(tmp_path, checkpoint, prefix="speaker_extractor.", project="arc_margin_intertopk_subcenter",
                    pooling="MHFA", model="WavLM_MHFA", seed=0, drop=(), extra=(), args=None):
    """A wespeaker run's avg_model.pt and config.yaml; returns (checkpoint path, config path, state).
    pooling G_MHFA_Conv2D: the author's MHFA_Group_Conv2D tensors (head_nb CA_HEAD_NB, group CA_GROUP);
    ``args`` overrides the config's model_args."""
    cfg, wavlm = official(checkpoint)
    layers, dim = cfg["encoder_layers"] + 1, cfg["encoder_embed_dim"]
    g = torch.Generator().manual_seed(seed)
    back_end = {"weights_k": torch.randn(layers, generator=g), "weights_v": torch.randn(layers, generator=g),
                "cmp_linear_k.weight": torch.randn(COMPRESSION, dim, generator=g) / dim ** 0.5,
                "cmp_linear_k.bias": torch.randn(COMPRESSION, generator=g),
                "cmp_linear_v.weight": torch.randn(COMPRESSION, dim, generator=g) / dim ** 0.5,
                "cmp_linear_v.bias": torch.randn(COMPRESSION, generator=g),
                "att_head.weight": torch.randn(HEADS, COMPRESSION, generator=g),
                "att_head.bias": torch.randn(HEADS, generator=g),
                "pooling_fc.weight": torch.randn(EMBED, HEADS * COMPRESSION, generator=g) / 20,
                "pooling_fc.bias": torch.randn(EMBED, generator=g)}
    heads, group = HEADS, 1
    if pooling == "G_MHFA_Conv2D":  # Conv2d(1, group, (head_nb // group + 1, 128), bias=False)
        heads, group = CA_HEAD_NB, CA_GROUP
        del back_end["att_head.bias"]
        back_end["att_head.weight"] = torch.randn(group, 1, heads // group + 1, COMPRESSION, generator=g) / 10
        back_end["pooling_fc.weight"] = torch.randn(EMBED, group * COMPRESSION, generator=g) / 20
    state = {f"{prefix}model.{k}": v for k, v in wavlm.items()}
    state.update({f"{prefix}back_end.{k}": v for k, v in back_end.items()})
    rows = CLASSES * (K if project == "arc_margin_intertopk_subcenter" else 1)
    state["projection.weight"] = torch.randn(rows, EMBED, generator=g)
    state = {k: v for k, v in state.items() if not any(k.endswith(d) for d in drop)}
    state.update({name: torch.zeros(2) for name in extra})
    ckpt = tmp_path / "avg_model.pt"
    torch.save(state, ckpt)
    config = {"exp_dir": "exp/WavLM-BasePlus-FullFineTuning-MHFA", "num_avg": 2, "seed": 42,
              "dataset_args": {"frontend": "wavlm", "num_frms": 300, "aug_prob": 0.6},
              "model": model, "model_init": None,
              "model_args": {"model_path": str(checkpoint), "head_nb": heads, "embed_dim": EMBED, "pooling": pooling,
                             "group": group, "cnn_scale": 0.0, "layer_drop": 0.05, "feature_grad_mult": 0.1,
                             **(args or {})},
              "projection_args": {"project_type": project, "scale": 32.0, "easy_margin": False, "embed_dim": EMBED,
                                  "num_class": CLASSES, "do_lm": False},
              "margin_update": {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 1},
              "loss": "CrossEntropyLoss"}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.dump(config))
    return str(ckpt), str(config_path), {"wavlm": wavlm, "back_end": back_end, "cfg": cfg}


def reference_embedding(ref, wav):
    """wespeaker's forward of one waveform [N] (float32), written out from its code: ssl_backend.MHFA, or the
    author's MHFA_Group_Conv2D when the back-end has his Conv2d weight [group, 1, group_len + 1, c]."""
    model = wavlm_model(**wavlm_cfg_to_torchaudio(ref["cfg"]), aux_num_out=None).eval()
    model.load_state_dict(wavlm_state_to_torchaudio(ref["wavlm"])[0])
    b = ref["back_end"]
    with torch.no_grad():
        x = torch.from_numpy(wav)[None, :16000 * 20]  # the first 20 s
        feats, _ = model.feature_extractor(x, None)
        layer0 = model.encoder.transformer._preprocess(model.encoder.feature_projection(feats))  # block input
        layers = [layer0] + model.extract_features(x)[0]  # each block's output
        x = torch.stack(layers, dim=-1).transpose(1, 2)  # [B, D, T, L+1]
        k = (x * torch.softmax(b["weights_k"], dim=-1)).sum(-1).transpose(1, 2)  # [B, T, D]
        v = (x * torch.softmax(b["weights_v"], dim=-1)).sum(-1).transpose(1, 2)
        k = k @ b["cmp_linear_k.weight"].T + b["cmp_linear_k.bias"]  # [B, T, c]
        v = v @ b["cmp_linear_v.weight"].T + b["cmp_linear_v.bias"]
        if b["att_head.weight"].dim() == 4:  # MHFA_Group_Conv2D: Conv2d over [B, 1, T, c], padding (group_len // 2, 0)
            group_len = b["att_head.weight"].shape[2] - 1
            k_att = F.conv2d(k.unsqueeze(1), b["att_head.weight"], padding=(group_len // 2, 0))  # [B, G, T, 1]
            att = torch.softmax(k_att.permute(0, 2, 1, 3), dim=1)  # [B, T, G, 1], over time
            pooled = (v.unsqueeze(-2) * att).sum(dim=1)  # [B, G, c]
        else:
            att = torch.softmax(k @ b["att_head.weight"].T + b["att_head.bias"], dim=1)  # [B, T, H], over time
            pooled = (v.unsqueeze(-2) * att.unsqueeze(-1)).sum(dim=1)  # [B, H, c]
        out = pooled.reshape(pooled.shape[0], -1) @ b["pooling_fc.weight"].T + b["pooling_fc.bias"]
    return out[0].numpy()


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x)


def write_wavs(tmp_path, lengths):
    rng = np.random.default_rng(3)
    folder = tmp_path / "wav"
    folder.mkdir(exist_ok=True)
    names = []
    for i, n in enumerate(lengths):
        name = f"spk{i % 2}/{i}.wav"
        (folder / name).parent.mkdir(exist_ok=True)
        sf.write(folder / name, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="FLOAT")
        names.append(name)
    return folder, names


def imported(tmp_path, ckpt, config, pretrained):
    """Run the import command on a wespeaker checkpoint + config: (the model file, its loaded content)."""
    out = str(tmp_path / "M.model")
    proc = run_main(import_wespeaker, "--checkpoint", ckpt, "--config", config, "--pretrained_model_path",
                    pretrained, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, torch.load(out, weights_only=True)


@pytest.mark.parametrize("which", ["tiny_checkpoint", "prenorm_checkpoint"])
def test_imported_model_gives_wespeakers_embeddings(which, request, tmp_path):
    checkpoint = request.getfixturevalue(which)
    ckpt, config, ref = write_wespeaker(tmp_path, checkpoint)
    out, saved = imported(tmp_path, ckpt, config, checkpoint)
    c = saved["config"]
    assert (c["model"], c["head_nb"], c["compression_dim"], c["nOut"]) == ("MHFA", HEADS, COMPRESSION, EMBED)
    assert (c["eval_frames"], c["max_eval_seconds"], c["eval_long_files"]) == (0, 20.0, "cut")
    assert (c["trainfunc"], c["nClasses"], c["subcenters"], c["scale"]) == ("aamsoftmax_subcenter", CLASSES, K, 32.0)
    torch.testing.assert_close(saved["model"]["loss_fn.weight"], torch.load(ckpt)["projection.weight"])
    folder, names = write_wavs(tmp_path, [24000, 20 * 16000 + 4000] if which == "tiny_checkpoint" else [17000])
    model = load_model(out, device="cpu")
    for name in names:
        wav = sf.read(folder / name, dtype="float32")[0]
        emb = model.embed_file(folder / name)
        assert emb.crop_embeddings is None  # no crops: wespeaker's protocol
        np.testing.assert_allclose(unit(emb.embeddings[0]), unit(reference_embedding(ref, wav)), atol=1e-4)


def test_imported_ca_mhfa_gives_the_authors_embeddings(tiny_checkpoint, tmp_path):
    """The author's G_MHFA_Conv2D (Wespeaker_SSL's WavLM_Base_MHFA) becomes our CAMHFA: head_nb = his group,
    context = his head_nb // group + 1, no 1/L; the embeddings are his forward's."""
    ckpt, config, ref = write_wespeaker(tmp_path, tiny_checkpoint, pooling="G_MHFA_Conv2D", model="WavLM_Base_MHFA",
                                        project="arc_margin")
    out, saved = imported(tmp_path, ckpt, config, tiny_checkpoint)
    c = saved["config"]
    assert (c["model"], c["head_nb"], c["context"], c["context_average"], c["compression_dim"], c["nOut"]) == (
        "CAMHFA", CA_GROUP, CA_HEAD_NB // CA_GROUP + 1, False, COMPRESSION, EMBED)
    assert saved["imported_from"]["pooling"] == "G_MHFA_Conv2D" and c["trainfunc"] == "aamsoftmax"
    torch.testing.assert_close(saved["model"]["encoder.backend.att_conv.weight"],
                               ref["back_end"]["att_head.weight"].squeeze(1).permute(0, 2, 1))
    folder, names = write_wavs(tmp_path, [24000, 20 * 16000 + 4000])
    model = load_model(out, device="cpu")
    for name in names:
        wav = sf.read(folder / name, dtype="float32")[0]
        emb = model.embed_file(folder / name)
        np.testing.assert_allclose(unit(emb.embeddings[0]), unit(reference_embedding(ref, wav)), atol=1e-4)


def test_imported_model_scores_through_the_evaluation(tiny_checkpoint, tmp_path):
    ckpt, config, ref = write_wespeaker(tmp_path, tiny_checkpoint, prefix="module.speaker_extractor.",
                                        project="arc_margin")
    out = str(tmp_path / "M.model")
    assert run_main(import_wespeaker, "--checkpoint", ckpt, "--config", config, "--pretrained_model_path",
                    tiny_checkpoint, "--out", out).returncode == 0
    folder, names = write_wavs(tmp_path, [16000, 20000, 18000, 22000])
    trials = tmp_path / "trials.txt"
    pairs = [(1, names[0], names[2]), (0, names[0], names[1]), (1, names[1], names[3]), (0, names[2], names[3])]
    trials.write_text("".join(f"{lab} {a} {b}\n" for lab, a, b in pairs))
    scores = tmp_path / "scores.txt"
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--initial_model", out, "--test_list", str(trials),
                    "--test_path", str(folder), "--score_file", str(scores), "--nDataLoaderThread", "0")
    assert proc.returncode == 0, proc.stderr
    assert "EER" in proc.stdout
    emb = {n: unit(reference_embedding(ref, sf.read(folder / n, dtype="float32")[0])) for n in names}
    lines = [line.split() for line in scores.read_text().splitlines()]
    assert [(int(lab), a, b) for lab, a, b, _ in lines] == pairs
    np.testing.assert_allclose([float(s) for *_, s in lines], [emb[a] @ emb[b] for _, a, b in pairs], atol=1e-4)
    assert torch.load(out, weights_only=True)["config"]["trainfunc"] == "aamsoftmax"


def test_plain_state_dict_and_default_pretrained_path(tiny_checkpoint, tmp_path):
    """No wrapper at all (a bare WavLM_MHFA state dict) and an unknown projection: the classifier is dropped;
    --pretrained_model_path defaults to the config's model_path."""
    ckpt, config, _ = write_wespeaker(tmp_path, tiny_checkpoint, prefix="", project="sphere")
    out = str(tmp_path / "M.model")
    proc = run_main(import_wespeaker, "--checkpoint", ckpt, "--config", config, "--out", out)
    assert proc.returncode == 0, proc.stderr
    saved = torch.load(out, weights_only=True)
    assert saved["imported_from"]["classifier"] == "dropped" and saved["config"]["trainfunc"] == "aamsoftmax"
    assert saved["model"]["loss_fn.weight"].shape == (CLASSES, EMBED)


@pytest.mark.parametrize("case, named", [
    (dict(pooling="G_MHFA"), "pooling 'G_MHFA'"),
    (dict(pooling="G_MHFA_Conv2D", args={"group": 4}), "model_args.group 4"),
    (dict(pooling="G_MHFA_Conv2D", args={"head_nb": 6}), "model_args.head_nb 6"),
    (dict(pooling="G_MHFA_Conv2D", drop=("back_end.att_head.weight",)), "missing ['back_end.att_head.weight']"),
    (dict(pooling="G_MHFA_Conv2D", extra=("back_end.att_head.bias",)), "unexpected ['back_end.att_head.bias']"),
    (dict(model="ECAPA_TDNN_GLOB_c512"), "model 'ECAPA_TDNN_GLOB_c512'"),
    (dict(drop=("back_end.att_head.bias",)), "back_end.att_head.bias"),
    (dict(drop=("model.encoder.layers.1.fc2.weight",)), "missing ['encoder.transformer.layers.1.feed_forward"
                                                        ".output_dense.weight']"),
    (dict(extra=("speaker_extractor.back_end.extra_norm.weight",)), "back_end.extra_norm.weight"),
    (dict(extra=("speaker_extractor.frontend.x",)), "frontend.x"),
    (dict(extra=("speaker_extractor.model.encoder.adapter.weight",)), "model.encoder.adapter.weight"),
    (dict(pretrained="prenorm_checkpoint"), "does not fit the architecture"),
])
def test_errors_exit_2_naming_the_cause(case, named, tiny_checkpoint, request, tmp_path):
    pretrained = request.getfixturevalue(case.pop("pretrained", "tiny_checkpoint"))
    ckpt, config, _ = write_wespeaker(tmp_path, tiny_checkpoint, **case)
    proc = run_main(import_wespeaker, "--checkpoint", ckpt, "--config", config, "--pretrained_model_path",
                    pretrained, "--out", str(tmp_path / "M.model"))
    last = proc.stderr.strip().splitlines()[-1]  # one line; INFO log lines of the front-end may come before it
    assert proc.returncode == 2 and last.startswith("error:") and named in last, proc.stderr
    assert not (tmp_path / "M.model").exists()


def test_config_and_checkpoint_disagreeing_is_an_error(tiny_checkpoint, tmp_path):
    ckpt, config, _ = write_wespeaker(tmp_path, tiny_checkpoint)
    text = yaml.safe_load(open(config))
    text["model_args"]["head_nb"] = 64
    open(config, "w").write(yaml.dump(text))
    proc = run_main(import_wespeaker, "--checkpoint", ckpt, "--config", config, "--pretrained_model_path",
                    tiny_checkpoint, "--out", str(tmp_path / "M.model"))
    assert proc.returncode == 2 and "model_args.head_nb 64" in proc.stderr


def test_ca_mhfa_tensors_that_have_no_camhfa_counterpart_are_errors():
    """An even Conv2d kernel (his head_nb // group odd) shortens the sequence; a weight not [G, 1, L, c] is not his."""
    back_end = {"pooling_fc.weight": torch.zeros(EMBED, 2 * COMPRESSION)}
    for weight, named in ((torch.zeros(2, 1, 4, COMPRESSION), "spans 4 frames"),
                          (torch.zeros(2, COMPRESSION), r"has shape \[2, 128\]")):
        with pytest.raises(import_wespeaker.CheckpointError, match=named):
            import_wespeaker.camhfa_options({}, {**back_end, "att_head.weight": weight})
