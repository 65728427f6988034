"""Model files (model_files.py): ours and the original repository's, loaded strictly and written atomically; the
self-contained header that rebuilds a model alone; checkpoint discovery; the speaker encoder built from a file."""
import os
import shutil

import pytest
import torch

from core.config import SSL_ARCHITECTURE
from core.errors import CheckpointError, ConfigError
from core.options import defaults
from model_files import (
    apply_model_file,
    build_speaker_encoder,
    find_checkpoints,
    load_model_state,
    model_file_fields,
    read_model_header,
    save_model_file,
)
from SpeakerNet import SpeakerNet
from synthetic.checkpoints import torchaudio_state_to_wavlm
from tests.fakes import MODEL_OPTIONS, make_net


def test_original_repo_model_file_loads_to_the_same_embeddings(tiny_checkpoint, tmp_path):
    trained = make_net(tiny_checkpoint)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = trained.state_dict()
    frontend = {k[len("encoder.frontend.model."):]: v for k, v in state.items() if k.startswith("encoder.frontend.")}
    original = {f"__S__.model.{k}": v for k, v in torchaudio_state_to_wavlm(frontend, "group_norm").items()}
    original.update({k.replace("encoder.backend.", "__S__.backend."): v for k, v in state.items()
                     if k.startswith("encoder.backend.")})
    original["__L__.weight"] = state["loss_fn.weight"]
    torch.save(original, tmp_path / "original.model")
    fresh = make_net(tiny_checkpoint)
    torch.manual_seed(1)
    load_model_state(fresh, str(tmp_path / "original.model"))
    wav = torch.randn(2, 8000)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.encoder(wav), trained.encoder(wav))


def test_mismatched_model_file_is_reported(tiny_checkpoint, tmp_path):
    torch.save({"model": make_net(tiny_checkpoint, nOut=6).state_dict()}, tmp_path / "m.model")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model_state(make_net(tiny_checkpoint), str(tmp_path / "m.model"))


def test_atomic_save_and_checkpoint_discovery(tmp_path):
    save_model_file({"x": torch.ones(1)}, str(tmp_path / "model000000002.model"))
    save_model_file({"x": torch.ones(1)}, str(tmp_path / "model000000010.model"))
    (tmp_path / "notes.txt").write_text("x")
    assert [e for e, _ in find_checkpoints(str(tmp_path))] == [2, 10]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_bad_model_files_give_one_clear_error_each(tiny_checkpoint, tmp_path):
    """Truncated, corrupted, and written by another architecture (a CA-MHFA model into MHFA): a CheckpointError
    naming the file and what was expected, never a bare traceback from torch."""
    net = make_net(tiny_checkpoint)
    good = tmp_path / "good.model"
    save_model_file({"model": net.state_dict()}, str(good))
    data = good.read_bytes()
    (tmp_path / "truncated.model").write_bytes(data[:len(data) // 2])
    (tmp_path / "corrupt.model").write_bytes(data[:100] + b"\x00" * 200 + data[300:])
    other = make_net(tiny_checkpoint, model="CAMHFA", head_nb=2)
    save_model_file({"model": other.state_dict()}, str(tmp_path / "camhfa.model"))
    for name, fragment in (("truncated.model", "truncated.model"), ("corrupt.model", "corrupt.model"),
                           ("camhfa.model", r"camhfa.model' does not fit this model: .*att_")):
        with pytest.raises(CheckpointError, match=fragment):
            load_model_state(make_net(tiny_checkpoint), str(tmp_path / name))
    load_model_state(make_net(tiny_checkpoint), str(good))


def save_self_contained(net, config, path):
    """A model file as training writes it (ModelTrainer.save): tensors + model_file_fields."""
    save_model_file({"model": net.state_dict(), **model_file_fields(net, config)}, str(path))


@pytest.mark.parametrize("checkpoint,over", [
    ("tiny_checkpoint", {}),
    ("tiny_checkpoint", {"model": "CAMHFA", "context": 5, "normalize_input": True}),
    ("prenorm_checkpoint", {"head_nb": 3}),  # Large-type: layer-norm CNN, pre-norm blocks
])
def test_a_model_file_rebuilds_its_model_without_the_pretrained_checkpoint(checkpoint, over, request, tmp_path):
    """The file alone (its config and front-end architecture) gives the same embeddings; the pre-trained
    checkpoint is gone and not read."""
    pretrained = tmp_path / "pretrained.pt"
    shutil.copy(request.getfixturevalue(checkpoint), pretrained)
    config = {**defaults(), **MODEL_OPTIONS, **over, "pretrained_model_path": str(pretrained)}
    torch.manual_seed(0)
    net = SpeakerNet(**config)
    with torch.no_grad():  # move the front-end away from the pre-trained weights, as training does
        for p in net.encoder.frontend.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_self_contained(net, config, tmp_path / "m.model")
    os.remove(pretrained)
    given = {**defaults(), "initial_model": str(tmp_path / "m.model")}
    resolved = apply_model_file(given, sources={})
    assert resolved["pretrained_model_path"] == "" and resolved[SSL_ARCHITECTURE]["family"] == "wavlm"
    assert {k: resolved[k] for k in over} == over and resolved["nOut"] == MODEL_OPTIONS["nOut"]
    encoder = build_speaker_encoder(resolved, torch.device("cpu")).eval()
    wav = 0.1 * torch.randn(2, 12000)
    with torch.no_grad():
        torch.testing.assert_close(encoder(wav), net.encoder.eval()(wav), rtol=0, atol=1e-6)


def test_a_model_file_lends_its_protocol_and_the_given_options_win(tiny_checkpoint, tmp_path):
    config = {**defaults(), **MODEL_OPTIONS, "pretrained_model_path": tiny_checkpoint, "eval_frames": 50,
              "num_eval": 2}
    save_self_contained(make_net(tiny_checkpoint, nOut=16, head_nb=2, compression_dim=8), config, tmp_path / "m.model")
    base = {**defaults(), "initial_model": str(tmp_path / "m.model"), "num_eval": 7}
    resolved = apply_model_file(base, sources={"num_eval": "--num_eval on the command line"})
    assert (resolved["eval_frames"], resolved["num_eval"]) == (50, 7)


def test_a_contradicting_option_names_both_values_and_places(tiny_checkpoint, tmp_path):
    config = {**defaults(), **MODEL_OPTIONS, "pretrained_model_path": tiny_checkpoint}
    path = str(tmp_path / "m.model")
    save_self_contained(make_net(tiny_checkpoint, nOut=16, head_nb=2, compression_dim=8), config, path)
    given = {**defaults(), "initial_model": path, "head_nb": 4, "nOut": 16, "model": "Baseline.Spk_Encoder"}
    sources = {"head_nb": "--head_nb on the command line", "nOut": "the config file 'c.yaml'",
               "model": "the config file 'c.yaml'"}
    with pytest.raises(ConfigError) as err:
        apply_model_file(given, sources)
    message = str(err.value)
    assert f"head_nb is 4 in --head_nb on the command line but 2 in the model file '{path}'" in message
    assert message.count("in the model file") == 1  # equal nOut and an alias of MHFA agree with the file
    assert apply_model_file({**given, "head_nb": 2}, sources)["head_nb"] == 2
    assert apply_model_file({**given, "head_nb": 4}, {})["head_nb"] == 2  # not given: a default, replaced


def test_model_files_without_an_architecture_load_as_before(tiny_checkpoint, tmp_path):
    """The original repository's files and older files of ours: the configuration (YAML, pre-trained
    checkpoint) builds the model, as before; a damaged architecture is a CheckpointError naming the file."""
    net = make_net(tiny_checkpoint)
    old = tmp_path / "old.model"
    save_model_file({"model": net.state_dict(), "config": {"nOut": 8}}, str(old))
    given = {**defaults(), "initial_model": str(old), "pretrained_model_path": tiny_checkpoint}
    assert apply_model_file(given, {}) == given and read_model_header(str(old)) is None
    damaged = tmp_path / "damaged.model"
    save_model_file({"model": net.state_dict(), "config": {}, "frontend": {"family": "wavlm", "config": {}}},
                    str(damaged))
    resolved = apply_model_file({**defaults(), "initial_model": str(damaged)}, {})
    with pytest.raises(CheckpointError, match="damaged.model'.*cannot be built"):
        build_speaker_encoder(resolved, torch.device("cpu"))
