"""The evaluation entry script: --help lists every option once; a model file of the original repository scores
short files exactly as the original protocol does; an unknown plug-in is refused with the real list."""
import os
import re

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

import trainSpeakerNet_Eval
from core.audio import frames_to_samples
from core.options import OPTIONS, defaults
from evaluation.reports import read_score_file
from SpeakerNet import SpeakerNet
from tests.fakes import MODEL_OPTIONS, run_script, to_original_format


@pytest.mark.parametrize("script", ["trainSpeakerNet.py", "trainSpeakerNet_Eval.py"])
def test_help_lists_every_option_once(script):
    proc = run_script(script, "--help")
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
    proc = run_script("trainSpeakerNet_Eval.py", "--eval", "--model", "ssl_frontend", "--initial_model", "none",
                      "--pretrained_model_path", small_demo["checkpoint"], "--test_list", small_demo["trials"],
                      "--test_path", small_demo["test_dir"], "--save_path", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "not a model plug-in" in proc.stderr and "Available: Baseline.Spk_Encoder, CAMHFA, MHFA." in proc.stderr
