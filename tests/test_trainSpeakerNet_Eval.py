"""The evaluation entry script: --help lists every option once; a model file of the original repository scores
short files exactly as the original protocol does; an unknown plug-in is refused with the real list; the evaluation
of a model through the entry script (runs/evaluate.py)."""
import contextlib
import io
import os
import re
import shutil

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

import trainSpeakerNet
import trainSpeakerNet_Eval
from core.audio import frames_to_samples
from core.options import OPTIONS, defaults
from evaluation.reports import read_score_file
from SpeakerNet import SpeakerNet
from tests.fakes import MODEL_OPTIONS, run_main, run_script, to_original_format


@pytest.mark.parametrize("how", ["trainSpeakerNet.py as a command", "trainSpeakerNet_Eval in this process"])
def test_help_lists_every_option_once(how):
    proc = run_script("trainSpeakerNet.py", "--help") if how.endswith("command") else run_main(trainSpeakerNet_Eval,
                                                                                               "--help")
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^\s+(?:-\w, )?--(\w+)", proc.stdout, flags=re.M)
    assert sorted(listed) == sorted(["help", "config"] + [o.name for o in OPTIONS])


def original_protocol_crops(audio, eval_frames, num_eval):
    """voxceleb_trainer's loadWAV(evalmode=True), written out: wrap-pad files of length <= crop by
    crop - length + 1 samples, then int(linspace(0, padded - crop, num_eval)) starts."""
    max_audio = eval_frames * 160 + 240
    if audio.shape[0] <= max_audio:
        audio = np.pad(audio, (0, max_audio - audio.shape[0] + 1), "wrap")
    starts = np.linspace(0, audio.shape[0] - max_audio, num=num_eval)
    return np.stack([audio[int(s):int(s) + max_audio] for s in starts])


def original_scores(encoder, root, pairs, crops_of):
    """The original's evaluateFromList: mean crop x crop cosine and whole-file cosine, averaged."""
    emb = {}
    with torch.no_grad():
        for key in {k for pair in pairs for k in pair}:
            audio = soundfile.read(os.path.join(root, key), dtype="float32")[0]
            crops = F.normalize(encoder(torch.from_numpy(crops_of(audio))), dim=1)
            whole = F.normalize(encoder(torch.from_numpy(audio)[None]), dim=1)
            emb[key] = crops, whole
    return np.array([((emb[e][0] @ emb[t][0].T).mean() + (emb[e][1] @ emb[t][1].T).mean()).item() / 2
                     for e, t in pairs])


def test_original_model_file_scores_short_files_as_the_original(tiny_checkpoint, tmp_path):
    torch.manual_seed(0)
    net = SpeakerNet(**{**defaults(), **MODEL_OPTIONS, "pretrained_model_path": tiny_checkpoint}).eval()
    torch.save(to_original_format(net.state_dict()), tmp_path / "original.model")
    lengths = {"short.wav": 16000, "exact.wav": 16240, "one_more.wav": 16241, "longer.wav": 24000}
    assert frames_to_samples(100) == 16240
    rng = np.random.default_rng(0)
    for name, n in lengths.items():
        soundfile.write(str(tmp_path / name), (0.1 * rng.standard_normal(n)).astype(np.float32), 16000,
                        subtype="FLOAT")
    names = list(lengths)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    (tmp_path / "trials.txt").write_text("".join(f"{k % 2} {e} {t}\n" for k, (e, t) in enumerate(pairs)))
    trainSpeakerNet_Eval.main([*[f"--{k}={v}" for k, v in MODEL_OPTIONS.items()], "--eval",
                               "--pretrained_model_path", tiny_checkpoint,
                               "--initial_model", str(tmp_path / "original.model"), "--eval_frames", "100",
                               "--num_eval", "5", "--test_list", str(tmp_path / "trials.txt"),
                               "--test_path", str(tmp_path), "--score_file", str(tmp_path / "scores.txt"),
                               "--embedding_cache", "false", "--nDataLoaderThread", "0",
                               "--save_path", str(tmp_path / "run")])
    _, got, scored_pairs = read_score_file(str(tmp_path / "scores.txt"))
    assert scored_pairs == pairs
    want = original_scores(net.encoder, str(tmp_path), pairs, lambda a: original_protocol_crops(a, 100, 5))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the test can tell: crops that all start at 0 (this toolkit's old rule) give other scores
    at_zero = original_scores(net.encoder, str(tmp_path), pairs,
                              lambda a: np.stack([np.resize(a, 16240)] * 5) if a.shape[0] <= 16240 else
                              original_protocol_crops(a, 100, 5))
    assert np.abs(at_zero - want).max() > 1e-4


def test_a_support_module_is_no_model(small_demo, tmp_path):
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--model", "ssl_frontend", "--initial_model", "none",
                      "--pretrained_model_path", small_demo["checkpoint"], "--test_list", small_demo["trials"],
                      "--test_path", small_demo["test_dir"], "--save_path", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "not a model plug-in" in proc.stderr and "Available: Baseline.Spk_Encoder, CAMHFA, MHFA." in proc.stderr


@pytest.fixture(scope="module")
def trained_alone(small_demo, tmp_path_factory):
    """A model trained on the small demo corpus (normalize_input on, tiny MHFA) with a YAML and a copy of the
    pre-trained checkpoint, scored with both; then both are removed. Returns (model file, folder, result line,
    score file)."""
    d, tmp = small_demo, tmp_path_factory.mktemp("alone")
    pretrained = tmp / "WavLM-Tiny.pt"
    shutil.copy(d["checkpoint"], pretrained)
    cfg = tmp / "run.yaml"
    cfg.write_text(f"max_frames: 50\neval_frames: 50\nnum_eval: 2\nbatch_size: 4\nnDataLoaderThread: 0\n"
                   f"max_epoch: 1\nnClasses: 6\nnOut: 16\nhead_nb: 2\ncompression_dim: 8\nnormalize_input: true\n"
                   f"LR_MHFA: 1e-3\nLR_Transformer: 1e-4\npretrained_model_path: {pretrained}\n"
                   f"save_path: {tmp / 'run'}\ntrain_list: {d['train_list']}\ntrain_path: {d['train_dir']}\n")
    trainSpeakerNet.main(["--config", str(cfg)])
    model = str(tmp / "run" / "model" / "model000000001.model")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        trainSpeakerNet_Eval.main(["--config", str(cfg), "--initial_model", model,
                                   *eval_options(d, tmp / "with_yaml.txt", tmp / "eval")])
    os.remove(cfg)
    os.remove(pretrained)
    return model, tmp, out.getvalue(), str(tmp / "with_yaml.txt")


def eval_options(demo, score_file, save_path):
    return ["--eval", "--test_list", demo["trials"], "--test_path", demo["test_dir"], "--score_file", str(score_file),
            "--embedding_cache", "false", "--nDataLoaderThread", "0", "--save_path", str(save_path)]


def test_a_trained_model_file_evaluates_alone_with_the_same_scores(trained_alone, small_demo, capsys):
    """Without its YAML and the pre-trained checkpoint (both removed), --initial_model alone rebuilds the
    model (front-end architecture, MHFA, normalize_input, evaluation protocol: all from the file)."""
    model, tmp, line, with_yaml = trained_alone
    trainSpeakerNet_Eval.main(["--initial_model", model, *eval_options(small_demo, tmp / "alone.txt", tmp / "eval2")])
    assert capsys.readouterr().out == line and line.startswith("EER ")
    labels, scores, pairs = read_score_file(with_yaml)
    labels2, scores2, pairs2 = read_score_file(str(tmp / "alone.txt"))
    assert pairs2 == pairs and np.array_equal(labels2, labels)
    np.testing.assert_allclose(scores2, scores, rtol=0, atol=1e-6)
    # the file's protocol was used: another one (the default 5 crops of 300 frames) gives other scores
    trainSpeakerNet_Eval.main(["--initial_model", model, "--eval_frames", "300", "--num_eval", "5",
                               *eval_options(small_demo, tmp / "other.txt", tmp / "eval3")])
    assert np.abs(read_score_file(str(tmp / "other.txt"))[1] - scores).max() > 1e-4


def test_an_option_that_contradicts_the_model_file_names_both(trained_alone, small_demo, capsys):
    model, tmp, _, _ = trained_alone
    options = eval_options(small_demo, tmp / "bad.txt", tmp / "eval4")
    with pytest.raises(SystemExit) as exit_info:
        trainSpeakerNet_Eval.main(["--initial_model", model, "--head_nb", "4", *options])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"head_nb is 4 in --head_nb on the command line but 2 in the model file '{model}'" in err
    cfg = tmp / "other.yaml"
    cfg.write_text("nOut: 32\nnormalize_input: false\nhead_nb: 2\n")
    with pytest.raises(SystemExit):
        trainSpeakerNet_Eval.main(["--config", str(cfg), "--initial_model", model, *options])
    err = capsys.readouterr().err
    assert f"nOut is 32 in the config file '{cfg}' but 16 in the model file '{model}'" in err
    assert f"normalize_input is False in the config file '{cfg}' but True in the model file" in err
    assert "head_nb" not in err and not os.path.exists(tmp / "bad.txt")
