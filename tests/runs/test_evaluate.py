"""The evaluation of a configured model (runs/evaluate.py): one shape of result, a list of ModelResult, whatever was
evaluated (one list, several, none labelled), and its lines on the command line; the same evaluation in two
data-parallel processes (gloo, and torchrun with two nodes), the embedding cache they leave, a failing process.
The checkpoints of a trained run are evaluated through the entry script in tests/test_trainSpeakerNet.py."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import trainSpeakerNet_Eval
from core.cli import build_parser
from core.config import load_config
from core.options import defaults
from evaluation import pipeline
from evaluation.embeddings import load_embeddings, save_embeddings
from evaluation.shares import extraction_shares
from runs.evaluate import ModelResult, evaluate_model, format_evaluation
from tests.fakes import ROOT, free_port, random_embeddings, random_trials, run_main, save_self_contained_model


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


def test_distributed_options_that_would_do_nothing_are_refused(tmp_path):
    """Re-scoring saved embeddings extracts nothing: --distributed on its command line exits 2 naming it; from a
    YAML (shared with training) the re-scoring runs in this process. A setting of the processes without
    --distributed is refused too."""
    paths = write_lists(tmp_path)
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", paths["O"], "--embeddings", paths["e"],
                    "--distributed")
    assert proc.returncode == 2 and "--distributed: re-scoring saved embeddings" in proc.stderr and proc.stdout == ""
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("distributed: true\n")
    shared = run_main(trainSpeakerNet_Eval, "--eval", "--config", str(yaml_file), "--test_list", paths["O"],
                      "--embeddings", paths["e"])
    assert shared.returncode == 0 and shared.stdout.startswith("EER ")
    alone = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", paths["O"], "--embeddings", paths["e"],
                     "--nproc_per_node", "4")
    assert alone.returncode == 2 and "--nproc_per_node sets up data-parallel processes" in alone.stderr


def test_rescoring_saved_embeddings_imports_no_torch(tmp_path):
    """--embeddings scores without a model: the command (a new process) never imports torch, the launcher of
    data-parallel processes included."""
    paths = write_lists(tmp_path)
    code = "import sys, trainSpeakerNet_Eval\ntrainSpeakerNet_Eval.main(sys.argv[1:])\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code, "--eval", "--test_list", paths["O"], "--embeddings",
                           paths["e"]], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("EER ") and proc.stdout.splitlines()[-1] == "False"


# ----------------------------------------------------------------------------- data-parallel evaluation

# Batched as by default (several files per forward pass: whole files of 16,000 and 20,000 samples padded together,
# the crops of 6 files together), in 5 s batches so that the 8 files are two chunks of the batch plan (6 | 2 files)
# and both processes extract (the default 60 s makes the tiny corpus one chunk). Each process runs the batches of
# one process for its chunks, so the embeddings are equal bit for bit, and the score files byte for byte.
BATCHED = ["--eval_batch_seconds", "5", "--nDataLoaderThread", "0"]
CHECKPOINTS = ("model000000001", "model000000002")


@pytest.fixture(scope="module")
def ddp_eval(tiny_checkpoint, corpus, tmp_path_factory):
    """A run folder with two checkpoints (self-contained tiny models of 2 and 4 heads, 2 crops of 40 frames), a
    trial list over the corpus, and both checkpoints evaluated by one process (one/) and by two (two/, with the
    embedding cache in cache/). Returns the folder, the options of the evaluation and the two commands' results."""
    root, keys = corpus
    tmp = tmp_path_factory.mktemp("ddp_eval")
    for folder in ("run/model", "one", "two", "again"):
        os.makedirs(tmp / folder)
    for name, heads in zip(CHECKPOINTS, (2, 4), strict=True):
        save_self_contained_model(tiny_checkpoint, tmp / "run" / "model" / f"{name}.model", eval_frames=40,
                                  num_eval=2, head_nb=heads)
    (tmp / "trials.txt").write_text("".join(f"{(i + j) % 2} {keys[i]} {keys[j]}\n"  # all 8 files: 28 trials
                                            for i in range(len(keys)) for j in range(i)))
    common = ["--eval", "--save_path", str(tmp / "run"), "--eval_checkpoints", "2", "--test_list",
              str(tmp / "trials.txt"), "--test_path", root, *BATCHED]
    one = run_main(trainSpeakerNet_Eval, *common, "--score_file", str(tmp / "one" / "s.txt"), "--save_embeddings",
                   str(tmp / "one" / "e.npz"), "--embedding_cache", "false")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_main(trainSpeakerNet_Eval, *common, "--score_file", str(tmp / "two" / "s.txt"), "--save_embeddings",
                   str(tmp / "two" / "e.npz"), "--embedding_cache_dir", str(tmp / "cache"), "--distributed",
                   "--nproc_per_node", "2", "--port", free_port(), "--dist_timeout", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    return {"tmp": tmp, "common": common, "one": one, "two": two}


def test_two_processes_evaluate_every_checkpoint_as_one_does(ddp_eval, corpus):
    """--distributed --nproc_per_node 2 (gloo), batched, each process a chunk of the batch plan: the same result
    lines, score files and threshold files (byte for byte) and embeddings (bit for bit) as one process; rank 0
    alone writes, and nothing else."""
    tmp, one, two = ddp_eval["tmp"], ddp_eval["one"], ddp_eval["two"]
    root, keys = corpus
    config = {**defaults(), "eval_frames": 40, "num_eval": 2, "eval_batch_seconds": 5.0}  # the models' protocol
    shares = extraction_shares(sorted(keys), root, config, 2)  # the trial lists' files, as the evaluation lists them
    assert [len(s.files) for s in shares] == [6, 2] and [set(s.chunks) for s in shares] == [{0}, {1}]
    assert two.stdout == one.stdout and [line.split()[0] for line in one.stdout.splitlines()] == list(CHECKPOINTS)
    outputs = sorted(f"{stem}.{name}{ext}" for name in CHECKPOINTS
                     for stem, ext in (("s", ".txt"), ("s", ".txt.det.png"), ("s", ".txt.threshold.json"),
                                       ("e", ".npz")))
    assert sorted(os.listdir(tmp / "one")) == sorted(os.listdir(tmp / "two")) == outputs
    for name in CHECKPOINTS:
        for output in (f"s.{name}.txt", f"s.{name}.txt.threshold.json"):
            assert (tmp / "two" / output).read_text() == (tmp / "one" / output).read_text(), output
        alone, shared = (load_embeddings(str(tmp / run / f"e.{name}.npz")) for run in ("one", "two"))
        assert shared.keys == alone.keys
        for field in ("embeddings", "crop_embeddings", "durations"):
            np.testing.assert_array_equal(getattr(shared, field), getattr(alone, field))


def test_the_cache_of_two_processes_serves_one(ddp_eval, monkeypatch, capsys):
    """The two processes left one cache entry per checkpoint, that of all the files (their shares' entries are
    gone); one process then reads them and extracts nothing, with the same results."""
    tmp, one = ddp_eval["tmp"], ddp_eval["one"]
    entries = sorted(os.listdir(tmp / "cache"))
    assert [entry.split(".emb-")[0] for entry in entries] == [f"{name}.model" for name in CHECKPOINTS]

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted although the cache holds the embeddings")

    monkeypatch.setattr(pipeline, "extract_files", no_extraction)
    again = run_main(trainSpeakerNet_Eval, *ddp_eval["common"], "--score_file", str(tmp / "again" / "s.txt"),
                     "--embedding_cache_dir", str(tmp / "cache"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == one.stdout
    assert again.stderr.count("read from the cache") == 2 and sorted(os.listdir(tmp / "cache")) == entries
    for name in CHECKPOINTS:
        assert (tmp / "again" / f"s.{name}.txt").read_text() == (tmp / "one" / f"s.{name}.txt").read_text()


@pytest.mark.slow
def test_torchrun_on_two_nodes_evaluates_as_one_process(ddp_eval, tmp_path):
    """Two torchrun agents on this machine as nodes 0 and 1 of one job (one process each, batched, a chunk of the
    batch plan each): the score file (byte for byte) and the embeddings (bit for bit) of one process; node 1
    prints nothing."""
    tmp = ddp_eval["tmp"]
    port = free_port()
    args = [*ddp_eval["common"], "--initial_model", str(tmp / "run" / "model" / f"{CHECKPOINTS[0]}.model"),
            "--score_file", str(tmp_path / "s.txt"), "--save_embeddings", str(tmp_path / "e.npz"),
            "--embedding_cache", "false", "--distributed"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
                               str(node), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port",
                               port, os.path.join(ROOT, "trainSpeakerNet_Eval.py"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for node in (0, 1)]
    outs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    assert outs[0][0].startswith("EER ") and outs[1][0] == ""
    assert (tmp_path / "s.txt").read_text() == (tmp / "one" / f"s.{CHECKPOINTS[0]}.txt").read_text()
    assert "2 processes extract the embeddings of 8 files (rank 0: 6)" in outs[0][1], outs[0][1][-3000:]
    got, want = (load_embeddings(str(path)) for path in (tmp_path / "e.npz", tmp / "one" / f"e.{CHECKPOINTS[0]}.npz"))
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    np.testing.assert_array_equal(got.crop_embeddings, want.crop_embeddings)


def test_the_processes_run_with_the_launching_process_thread_count(ddp_eval, tmp_path):
    """CPU kernels (the CNN's convolutions, the positional convolution's FFT and weight norm) give other last bits on
    another torch thread count; the launcher starts its processes with its own count (here 1, not the default of
    the machine), so they give the embeddings of one process with that count, bit for bit."""
    tmp = ddp_eval["tmp"]
    args = [*ddp_eval["common"], "--initial_model", str(tmp / "run" / "model" / f"{CHECKPOINTS[0]}.model"),
            "--embedding_cache", "false"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_main(trainSpeakerNet_Eval, *args, "--score_file", str(tmp_path / "one.txt"), "--save_embeddings",
                       str(tmp_path / "one.npz"))
        two = run_main(trainSpeakerNet_Eval, *args, "--score_file", str(tmp_path / "two.txt"), "--save_embeddings",
                       str(tmp_path / "two.npz"), "--distributed", "--nproc_per_node", "2", "--port", free_port(),
                       "--dist_timeout", "2")
    finally:
        torch.set_num_threads(threads)
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-2000:] + two.stderr[-2000:]
    assert (tmp_path / "two.txt").read_text() == (tmp_path / "one.txt").read_text()
    alone, shared = (load_embeddings(str(tmp_path / f"{run}.npz")) for run in ("one", "two"))
    np.testing.assert_array_equal(shared.embeddings, alone.embeddings)
    np.testing.assert_array_equal(shared.crop_embeddings, alone.crop_embeddings)


def test_a_failing_process_ends_the_others_with_its_message(ddp_eval, corpus, tmp_path):
    """A file too short to embed, in one process's share (the data check off, so extraction meets it): the
    command ends at once with exit status 2 and that process's message, and writes nothing."""
    root, keys = corpus
    folder = tmp_path / "wavs"
    shutil.copytree(root, folder)
    soundfile.write(str(folder / "short.wav"), np.zeros(100, dtype=np.float32), 16000)
    (tmp_path / "trials.txt").write_text(f"1 short.wav {keys[0]}\n0 {keys[1]} {keys[2]}\n")
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--initial_model",
                    str(ddp_eval["tmp"] / "run" / "model" / f"{CHECKPOINTS[0]}.model"), "--test_list",
                    str(tmp_path / "trials.txt"), "--test_path", str(folder), "--check_data", "false",
                    "--score_file", str(tmp_path / "s.txt"), "--embedding_cache", "false", *BATCHED, "--distributed",
                    "--nproc_per_node", "2", "--port", free_port(), "--dist_timeout", "2")
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.search(r"error: rank \d: 1 audio file\(s\) shorter than one frame", proc.stderr), proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "s.txt")
