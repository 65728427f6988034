"""tools.verify: the pair's score equals the evaluation's score for that trial, the decision
follows the saved EER threshold (or a given one), and the eval's AS-norm settings are reused."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

import trainSpeakerNet_Eval
from core.config import load_config
from core.errors import ConfigError
from core.options import THRESHOLD, with_role
from evaluation.extraction import extract_embeddings
from evaluation.pipeline import THRESHOLD_SETTINGS
from evaluation.reports import read_score_file
from evaluation.scoring import score_trials
from evaluation.trials import Trials
from inference.model import model_settings
from model_files import with_model_file
from tests.fakes import save_self_contained_model, save_tiny_model
from tools.verify import main as verify_main
from tools.verify import verification_settings, verify_parser


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, corpus, tmp_path_factory):
    """An eval run (AS-norm, score file) of the tiny model on a small trial list."""
    root, keys = corpus
    tmp = tmp_path_factory.mktemp("verify")
    _, model_options = save_tiny_model(tiny_checkpoint, tmp / "m.model")
    np.savez(tmp / "cohort.npz", keys=np.array([f"s{i}" for i in range(9)]),
             embeddings=np.random.default_rng(3).normal(size=(9, 16)).astype(np.float32))
    trials = [(int(i % 2), keys[i], keys[(i * 3 + 1) % len(keys)]) for i in range(len(keys))]
    (tmp / "trials.txt").write_text("".join(f"{y} {e} {t}\n" for y, e, t in trials))
    common = [*model_options, "--eval_frames", "40", "--num_eval", "2", "--max_eval_seconds", "0",
              "--nDataLoaderThread", "0"]
    trainSpeakerNet_Eval.main([*common, "--eval", "--test_list", str(tmp / "trials.txt"), "--test_path", root,
                               "--score_norm", "asnorm", "--top_n", "4", "--cohort_embeddings", str(tmp / "cohort.npz"),
                               "--score_file", str(tmp / "scores.txt")])
    return root, keys, common, tmp


def verify_line(capsys, *argv):
    capsys.readouterr()
    verify_main(list(argv))
    fields = capsys.readouterr().out.split()
    assert fields[0::2][:2] == ["score", "threshold"] and fields[4] in ("accept", "reject")
    return float(fields[1]), float(fields[3]), fields[4]


def test_verify_matches_the_evaluation_and_its_threshold(evaluated, capsys):
    root, keys, common, tmp = evaluated
    labels, scores, pairs = read_score_file(str(tmp / "scores.txt"))
    record = json.loads((tmp / "scores.txt.threshold.json").read_text())
    assert record["score_norm"] == "asnorm" and record["top_n"] == 4
    for (enroll, test), want in list(zip(pairs, scores, strict=True))[:3]:
        score, threshold, decision = verify_line(capsys, *common, os.path.join(root, enroll), os.path.join(root, test),
                                                 "--threshold_file", str(tmp / "scores.txt.threshold.json"))
        assert score == pytest.approx(want, abs=2e-5)  # AS-norm with the eval's cohort, from the file alone
        assert threshold == pytest.approx(record["eer_threshold"], abs=1e-6)
        assert decision == ("accept" if score >= threshold else "reject")


def test_given_threshold_and_override(evaluated, capsys):
    root, keys, common, tmp = evaluated
    wavs = [os.path.join(root, keys[0]), os.path.join(root, keys[1])]
    assert verify_line(capsys, *common, *wavs, "--threshold=-1e9")[2] == "accept"
    assert verify_line(capsys, *common, *wavs, "--threshold", "1e9")[2] == "reject"
    raw = verify_line(capsys, *common, *wavs, "--threshold", "0")[0]
    unit = verify_line(capsys, *common, *wavs, "--threshold_file", str(tmp / "scores.txt.threshold.json"),
                       "--score_norm", "none")[0]
    assert raw == unit and -1 <= raw <= 1  # a raw cosine-based score, not AS-normalised


def test_errors_say_what_to_do(evaluated, capsys):
    root, keys, common, tmp = evaluated
    wav = os.path.join(root, keys[0])
    with pytest.raises(SystemExit) as exit_info:
        verify_main([*common, wav, wav])
    assert exit_info.value.code == 2 and "--threshold_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        verify_main([*common, wav, str(tmp / "missing.wav"), "--threshold", "0"])
    assert "missing.wav" in capsys.readouterr().err
    (tmp / "bad.json").write_text("{}")
    with pytest.raises(SystemExit):
        verify_main([*common, wav, wav, "--threshold_file", str(tmp / "bad.json")])
    assert "eer_threshold" in capsys.readouterr().err


def test_extraction_settings_come_from_the_threshold_file(evaluated, capsys):
    """The evaluation used eval_frames 40, num_eval 2, no whole-file cap; verify is given none of these (the
    defaults would be 300 frames, 5 crops, 43.75 s) and must take them from the threshold file."""
    root, keys, common, tmp = evaluated
    model_only = common[:common.index("--eval_frames")] + ["--nDataLoaderThread", "0"]
    record = json.loads((tmp / "scores.txt.threshold.json").read_text())
    assert (record["eval_frames"], record["num_eval"], record["max_eval_seconds"]) == (40, 2, 0.0)
    labels, scores, pairs = read_score_file(str(tmp / "scores.txt"))
    (enroll, test), want = pairs[0], scores[0]
    threshold_file = ["--threshold_file", str(tmp / "scores.txt.threshold.json")]
    score = verify_line(capsys, *model_only, os.path.join(root, enroll), os.path.join(root, test), *threshold_file)[0]
    assert score == pytest.approx(want, abs=2e-5)
    # an option written on the command line still wins over the file
    other = verify_line(capsys, *model_only, "--num_eval", "3", os.path.join(root, enroll), os.path.join(root, test),
                        *threshold_file)[0]
    assert other != pytest.approx(want, abs=2e-5)


def test_verify_with_a_model_file_alone(tiny_checkpoint, corpus, tmp_path, capsys):
    """A model file written by training: no YAML, no pre-trained checkpoint (removed), the score of the
    evaluation's protocol with the model's own extraction options (eval_frames 40, 2 crops)."""
    root, keys = corpus
    pretrained = tmp_path / "pretrained.pt"
    shutil.copy(tiny_checkpoint, pretrained)
    encoder, _ = save_self_contained_model(str(pretrained), tmp_path / "m.model", eval_frames=40, num_eval=2)
    os.remove(pretrained)
    pair = [keys[0], keys[3]]
    emb = extract_embeddings(encoder, pair, root, 40, 2, 43.75, torch.device("cpu"), verbose=False)
    want = score_trials(emb, Trials(None, [pair[0]], [pair[1]]))[0]
    score, _, decision = verify_line(capsys, "--initial_model", str(tmp_path / "m.model"), "--nDataLoaderThread", "0",
                                     *[os.path.join(root, k) for k in pair], "--threshold", "-1")
    assert score == pytest.approx(want, abs=1e-5) and decision == "accept"


def test_one_option_through_every_rung_of_the_commands(tiny_checkpoint, tmp_path):
    """The ladder as the commands climb it (core/config.py): eval_frames is 300 by default, 40 in a self-contained
    model file, 60 in the YAML, 80 in a threshold file and 100 on the command line; each rung overrides the one
    below. The threshold itself climbs the same rungs (YAML 0.1 < the file's EER threshold 0.25 < --threshold).
    load_model's options are the command line's rung. A model option the YAML contradicts names both places."""
    model = tmp_path / "m.model"
    save_self_contained_model(tiny_checkpoint, model, eval_frames=40)
    cfg, record, bad = tmp_path / "c.yaml", tmp_path / "t.json", tmp_path / "bad.yaml"
    cfg.write_text("eval_frames: 60\nthreshold: 0.1\n")
    record.write_text(json.dumps({"eer_threshold": 0.25, "eval_frames": 80, "eer": 0.1}))
    bad.write_text("nOut: 32\n")

    def resolve(*argv):
        return verification_settings(with_model_file(load_config(verify_parser(), ["a.wav", "b.wav", *argv])))

    file, yaml_file, threshold_file = ["--initial_model", str(model)], ["--config", str(cfg)], ["--threshold_file",
                                                                                               str(record)]
    assert resolve("--threshold", "0.5")["eval_frames"] == 300
    assert resolve(*file, "--threshold", "0.5")["eval_frames"] == 40
    with_yaml = resolve(*file, *yaml_file)
    assert (with_yaml["eval_frames"], with_yaml["threshold"]) == (60, 0.1)
    with_record = resolve(*file, *yaml_file, *threshold_file)
    assert (with_record["eval_frames"], with_record["threshold"]) == (80, 0.25)
    assert with_record.origin("eval_frames")[1] == f"the threshold file '{record}'"
    top = resolve(*file, *yaml_file, *threshold_file, "--eval_frames", "100", "--threshold", "0.5")
    assert (top["eval_frames"], top["threshold"]) == (100, 0.5)
    assert top.origin("eval_frames")[1] == "--eval_frames on the command line"
    assert model_settings(str(model))["eval_frames"] == 40
    assert model_settings(str(model), str(cfg))["eval_frames"] == 60
    assert model_settings(str(model), str(cfg), eval_frames=100)["eval_frames"] == 100
    with pytest.raises(ConfigError, match=re.escape(f"nOut is 32 in the config file '{bad}' but 16 in the model "
                                                    f"file '{model}'")):
        resolve(*file, "--config", str(bad), *threshold_file)
    with pytest.raises(ConfigError, match=re.escape(f"nOut is 32 in load_model(nOut=...) but 16 in the model file "
                                                    f"'{model}'")):
        model_settings(str(model), nOut=32)
    # what an evaluation records in a threshold file is what the threshold-file rung takes (and the threshold)
    assert set(THRESHOLD_SETTINGS) | {"threshold"} == set(with_role(THRESHOLD))
