"""The evaluation of a configured model (runs/evaluate.py): one shape of result, a list of ModelResult, whatever was
evaluated (one list, several, none labelled), and its lines on the command line. The checkpoints of a run are
evaluated through the entry script in tests/test_trainSpeakerNet.py."""
import numpy as np

import trainSpeakerNet_Eval
from core.cli import build_parser
from core.config import load_config
from evaluation.embeddings import save_embeddings
from runs.evaluate import ModelResult, evaluate_model, format_evaluation
from tests.fakes import random_embeddings, random_trials, run_main


def write_lists(tmp_path):
    """Saved embeddings, two labelled trial lists O and H and an unlabelled one U; returns the paths."""
    emb = random_embeddings(30, 6, crops=3)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    for name, seed in (("O", 1), ("H", 2), ("U", 3)):
        trials = random_trials(emb.keys, n=40, seed=seed)
        (tmp_path / f"{name}.txt").write_text("".join(
            (f"{e} {t}\n" if name == "U" else f"{y} {e} {t}\n")
            for y, e, t in zip(trials.labels, trials.enroll, trials.test, strict=True)))
    return {"e": str(tmp_path / "e.npz"), **{name: str(tmp_path / f"{name}.txt") for name in ("O", "H", "U")}}


def configured(*argv):
    return load_config(build_parser("test"), ["--eval", *argv])


def test_every_evaluation_is_a_list_of_model_results(tmp_path):
    paths = write_lists(tmp_path)
    one = evaluate_model(configured("--test_list", paths["O"], "--embeddings", paths["e"]))
    assert len(one) == 1 and isinstance(one[0], ModelResult) and one[0].name is None
    assert set(one[0].result) >= {"eer", "min_dcf"}
    several = evaluate_model(configured("--test_list", paths["O"], paths["H"], paths["U"], "--embeddings", paths["e"]))
    assert [r.name for r in several] == [None] and list(several[0].result["lists"]) == ["O", "H"]  # U: no labels
    assert several[0].result["lists"]["O"] == one[0].result
    assert evaluate_model(configured("--test_list", paths["U"], "--embeddings", paths["e"])) == []


def test_the_command_prints_a_line_per_result_and_nothing_for_none(tmp_path):
    paths = write_lists(tmp_path)
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", paths["O"], paths["H"], "--embeddings", paths["e"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = evaluate_model(configured("--test_list", paths["O"], paths["H"], "--embeddings", paths["e"]))
    assert proc.stdout == format_evaluation(results) + "\n"
    assert [line.split()[:2] for line in proc.stdout.splitlines()] == [["O", "EER"], ["H", "EER"]]
    unlabelled = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", paths["U"], "--embeddings", paths["e"])
    assert unlabelled.returncode == 0 and unlabelled.stdout == ""  # scores only: no result line, not an empty one


def metrics(eer, crops=None):
    out = {"eer": eer, "min_dcf": {0.05: 0.25, 0.01: 0.5}}
    return out if crops is None else {**out, "parts": {"crops": crops, "whole": eer + 1}}


def test_format_evaluation():
    assert format_evaluation([]) == ""
    assert format_evaluation([ModelResult(None, metrics(1.5, crops=2.0))]) == \
        "EER 1.5000 MinDCF0.05 0.25000 MinDCF0.01 0.50000"  # the model named by the configuration: no parts
    assert format_evaluation([ModelResult(None, {"lists": {"O": metrics(1.0), "H": metrics(2.0)}})]) == (
        "O EER 1.0000 MinDCF0.05 0.25000 MinDCF0.01 0.50000\n"
        "H EER 2.0000 MinDCF0.05 0.25000 MinDCF0.01 0.50000")
    checkpoints = [ModelResult("model000000002", metrics(3.0, crops=np.float64(4.0))),
                   ModelResult("model000000003", {"lists": {"O": metrics(1.0, crops=2.0), "H": metrics(2.0)}})]
    assert format_evaluation(checkpoints) == (
        "model000000002 EER 3.0000 MinDCF0.05 0.25000 MinDCF0.01 0.50000 CropEER 4.0000 WholeEER 4.0000\n"
        "model000000003 O EER 1.0000 MinDCF0.05 0.25000 MinDCF0.01 0.50000 CropEER 2.0000 WholeEER 2.0000 | "
        "H EER 2.0000 MinDCF0.05 0.25000 MinDCF0.01 0.50000")


def test_distributed_does_nothing_here_so_the_command_line_refuses_it(tmp_path):
    """The eval command runs in one process: --distributed on its command line exits 2 saying so (it used to be
    accepted and ignored); from a YAML (shared with training) it is noted and the evaluation runs."""
    paths = write_lists(tmp_path)
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", paths["O"], "--embeddings", paths["e"],
                    "--distributed")
    assert proc.returncode == 2 and "--distributed: the eval command" in proc.stderr and proc.stdout == ""
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("distributed: true\n")
    shared = run_main(trainSpeakerNet_Eval, "--eval", "--config", str(yaml_file), "--test_list", paths["O"],
                      "--embeddings", paths["e"])
    assert shared.returncode == 0 and shared.stdout.startswith("EER ")
    assert "applies to training; the eval command runs in one process" in shared.stderr
