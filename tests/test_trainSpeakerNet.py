"""Tiny runs through the command-line entry points: train -> checkpoint -> resume -> eval. The entry scripts' main()
runs in this process (tests.fakes.run_main: exit status, stdout, stderr as a shell sees them); real commands only
where a new process matters (signals, the distributed launcher). The session's one trained run (conftest
``trained_run``) serves the tests that only evaluate, resume or inspect a run. Covers the training run
(runs/train.py) and its stop on a signal with a resumable checkpoint (core/interrupt.py)."""
import gc
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import yaml

import trainSpeakerNet
import trainSpeakerNet_Eval
import tuneThreshold
from evaluation.embeddings import load_embeddings
from runs.trainer import ModelTrainer
from tests.fakes import ROOT, device_tolerance, run_main, run_script, to_original_format


@pytest.fixture
def config(tiny_config):
    return tiny_config


def result_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("EER ")]
    assert len(lines) == 1, stdout
    fields = lines[0].split()
    assert fields[0::2] == ["EER", "MinDCF0.05", "MinDCF0.01"]
    assert len(fields[1].split(".")[1]) >= 4 and len(fields[3].split(".")[1]) >= 5
    return lines[0]


def test_train_resume_and_evaluate(config, trained_run, tmp_path):
    cfg, save = config
    first, again = trained_run["first"], trained_run["again"]
    result_line(first.stdout)
    assert trained_run["models"] == ["model000000001.model", "model000000002.model"]
    scores_txt = trained_run["scores"]
    assert [line.split("Epoch ")[1].split(",")[0] for line in scores_txt] == ["1", "2"]
    assert all("TLOSS" in line and "EER" in line for line in scores_txt)
    assert os.path.isfile(os.path.join(save, "result", "config.yaml"))
    ckpt2 = trained_run["ckpt2"]
    assert ckpt2["epoch"] == 2 and "optimizer" in ckpt2

    # same command with more epochs: resumes at epoch 3 from the newest checkpoint
    assert "Resumed from" in again.stderr and "model000000002.model" in again.stderr
    assert [line.split("Epoch ")[1].split(",")[0]
            for line in open(os.path.join(save, "result", "scores.txt")).read().splitlines()] == ["1", "2", "3"]
    ckpt3 = torch.load(os.path.join(save, "model", "model000000003.model"), weights_only=True)
    changed = [k for k in ckpt3["model"] if not torch.equal(ckpt3["model"][k], ckpt2["model"][k])]
    assert any(k.startswith("encoder.backend.") for k in changed)  # training went on
    assert any(".transformer.layers." in k for k in changed)  # joint fine-tuning updates the blocks
    assert not any("feature_extractor" in k for k in changed)  # the CNN stays frozen

    # a finished run says so instead of silently training nothing (the original's LMFT trap)
    done = run_main(trainSpeakerNet, "--config", cfg, "--max_epoch", "3", "--initial_model", "other.model")
    assert done.returncode == 0 and "Nothing to train" in done.stderr and "own save_path" in done.stderr

    # eval CLI: result line, score file in trial order, embeddings out and back in
    model = os.path.join(save, "model", "model000000003.model")
    score_file, emb_file = str(tmp_path / "scores.txt"), str(tmp_path / "emb.npz")
    ev = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model", model,
                  "--score_file", score_file, "--save_embeddings", emb_file)
    assert ev.returncode == 0, ev.stderr[-3000:]
    line = result_line(ev.stdout)
    trials = [t.split() for t in open(config_trials(cfg)).read().splitlines()]
    scored = [s.split() for s in open(score_file).read().splitlines()]
    assert [s[:3] for s in scored] == trials
    emb = np.load(emb_file)
    assert emb["embeddings"].shape[1] == 16 and emb["crop_embeddings"].shape[1:] == (2, 16)
    from_emb = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", config_trials(cfg), "--embeddings", emb_file)
    assert from_emb.returncode == 0, from_emb.stderr[-3000:]
    assert result_line(from_emb.stdout) == line
    metrics = run_main(tuneThreshold, score_file)
    assert metrics.returncode == 0 and metrics.stdout.strip() == line

    # the same weights in the original repository's format evaluate to the same result
    original = str(tmp_path / "original.model")
    torch.save(to_original_format(ckpt3["model"]), original)
    orig = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model", original,
                    "--save_path", str(tmp_path / "orig"))
    assert orig.returncode == 0, orig.stderr[-3000:]
    assert result_line(orig.stdout) == line


def config_trials(cfg):
    return [line.split(": ", 1)[1] for line in open(cfg).read().splitlines() if line.startswith("test_list")][0]


def test_errors_name_the_problem(config, tmp_path):
    cfg, _ = config
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(cfg).read() + "hed_nb: 4\n")
    proc = run_main(trainSpeakerNet, "--config", str(bad))
    assert proc.returncode == 2 and "hed_nb" in proc.stderr and "head_nb" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_main(trainSpeakerNet, "--config", cfg, "--nClasses", "7", "--save_path", str(tmp_path / "x"))
    assert proc.returncode == 2 and "nClasses" in proc.stderr and "6 speakers" in proc.stderr
    proc = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model",
                      str(tmp_path / "none.model"))
    assert proc.returncode == 2 and "none.model" in proc.stderr and "Traceback" not in proc.stderr


def bad_training_list(cfg, tmp_path):
    """The config's training list plus a missing file, an empty file, an 8 kHz and a stereo file."""
    lines = [line.split(": ", 1)[1] for line in open(cfg).read().splitlines() if line.startswith("train_")]
    train_list, train_path = lines
    first = open(train_list).readline().split()
    audio, _ = soundfile.read(os.path.join(train_path, first[1]), dtype="float32")
    extra = tmp_path / "extra"
    extra.mkdir()
    soundfile.write(str(extra / "k8.wav"), audio[::2], 8000)
    soundfile.write(str(extra / "stereo.wav"), np.stack([audio, audio], 1), 16000)
    (extra / "empty.wav").write_bytes(b"")
    bad = tmp_path / "train_bad.txt"
    bad.write_text(open(train_list).read() + f"{first[0]} {extra}/k8.wav\n{first[0]} {extra}/stereo.wav\n"
                   f"{first[0]} nowhere/x.wav\n{first[0]} {extra}/empty.wav\n")
    return str(bad), len(open(train_list).read().splitlines())


def test_bad_training_data_stops_the_run_or_is_dropped(config, tmp_path):
    """Before any training: unusable entries are listed as list:line: path: reason (exit 2); with drop_bad_data
    the run trains without them and says how many it dropped; 8 kHz and stereo files are converted, reported
    once with their counts."""
    cfg, _ = config
    bad, n = bad_training_list(cfg, tmp_path)
    save = tmp_path / "stopped"
    proc = run_main(trainSpeakerNet, "--config", cfg, "--train_list", bad, "--save_path", str(save))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{bad}:{n + 3}: " in proc.stderr and "nowhere/x.wav: missing" in proc.stderr
    assert f"{bad}:{n + 4}: " in proc.stderr and "empty.wav: empty file" in proc.stderr
    assert "2 of " in proc.stderr and "drop_bad_data" in proc.stderr and not os.listdir(save / "model")
    proc = run_main(trainSpeakerNet, "--config", cfg, "--train_list", bad, "--save_path", str(save),
                      "--drop_bad_data", "true", "--max_epoch", "1", "--max_seg_per_spk", "100", "--batch_size", "6",
                      "--nPerSpeaker", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"dropping 2 of {n + 4} entries" in proc.stderr
    assert proc.stderr.count("resampled from 8000 Hz") == 1 and proc.stderr.count("averaged from 2 channels") == 1
    assert "logged once per run" not in proc.stderr  # the readers stay quiet: the check reported them
    # every file that exists is in the cache (trial files too), so the next start probes none
    cache = json.load(open(save / "data_check.json"))["files"]
    assert len([k for k in cache if "/data/test/" not in k]) == n + 3 and not any(k.endswith("x.wav") for k in cache)


def test_trial_files_missing_under_absent_speaker_folders_get_the_vox1_hint(config, tmp_path):
    cfg, _ = config
    train_path = [line.split(": ", 1)[1] for line in open(cfg).read().splitlines() if line.startswith("train_path")][0]
    proc = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model", "none",
                      "--test_path", train_path, "--save_path", str(tmp_path / "e"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    trials = config_trials(cfg)
    assert f"{trials}:1: {train_path}/" in proc.stderr and ": missing" in proc.stderr
    assert "speaker folder(s) the lists use are not in test_path" in proc.stderr and "dev and test" in proc.stderr


def test_several_trial_lists_keep_one_line_per_epoch(config, tmp_path):
    cfg, _ = config
    trials = config_trials(cfg)
    copy = tmp_path / "copy.txt"
    copy.write_text(open(trials).read())
    save = tmp_path / "two_lists"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    proc = run_main(trainSpeakerNet, "--config", cfg, "--max_epoch", "1", "--save_path", str(save),
                    "--test_list", trials, str(copy), "--augment", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(cwd) == []  # no score file, DET plot or threshold file of either list lands here
    lines = open(save / "result" / "scores.txt").read().splitlines()
    assert len(lines) == 1 and "trials EER" in lines[0] and "copy EER" in lines[0]
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["trials", "copy"]  # stdout: a line per list


@pytest.mark.parametrize("key", ["test_list", "test_path", "cohort_embeddings", "initial_model"])
def test_every_input_is_checked_before_training(config, tmp_path, key):
    """A wrong evaluation path used to surface at the first evaluation, after an epoch of training."""
    cfg, _ = config
    save = tmp_path / "never"
    extra = ["--score_norm", "snorm"] if key == "cohort_embeddings" else []
    proc = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(save), f"--{key}",
                      str(tmp_path / "missing"), *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"'{key}'" in proc.stderr and "missing" in proc.stderr
    assert not os.path.exists(save / "model") or not os.listdir(save / "model")  # nothing was trained


@pytest.mark.slow
def test_distributed_training_on_two_cpu_processes(config, tmp_path):
    """--distributed without a launcher: nproc_per_node gloo processes; rank 0 alone writes files."""
    cfg, _ = config
    save = tmp_path / "ddp"
    proc = run_script("trainSpeakerNet.py", "--config", cfg, "--distributed", "--nproc_per_node", "2",
                      "--max_epoch", "2", "--save_path", str(save), "--port", "29531", "--dist_timeout", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result_line(proc.stdout)
    assert sorted(os.listdir(save / "model")) == ["model000000001.model", "model000000002.model"]
    lines = open(save / "result" / "scores.txt").read().splitlines()
    assert [line.split("Epoch ")[1].split(",")[0] for line in lines] == ["1", "2"]  # once, not once per rank
    assert "2 process(es), batch_size 4 each" in proc.stderr
    # a bad input in the processes ends them all, with the message and exit 2
    bad = run_script("trainSpeakerNet.py", "--config", cfg, "--distributed", "--nproc_per_node", "2",
                     "--nClasses", "7", "--save_path", str(tmp_path / "bad"), "--port", "29532", "--dist_timeout", "1")
    assert bad.returncode == 2 and "nClasses" in bad.stderr and "Traceback" not in bad.stderr.split("error:")[-1]


def test_evaluation_without_a_model_scores_the_newest_checkpoints(config, trained_run, tmp_path):
    cfg, _ = config
    none = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", str(tmp_path / "empty"))
    assert none.returncode == 2 and "No checkpoint to evaluate" in none.stderr and "--initial_model" in none.stderr
    save = trained_run["save"]  # 3 checkpoints
    proc = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", save, "--eval_checkpoints", "2",
                    "--score_file", str(tmp_path / "s.txt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["model000000002", "model000000003"]
    assert all(line.split()[1::2] == ["EER", "MinDCF0.05", "MinDCF0.01", "CropEER", "WholeEER"] for line in lines)
    assert (tmp_path / "s.model000000003.txt").is_file() and (tmp_path / "s.model000000002.txt").is_file()
    # the evaluation ends with a table (checkpoint x list), in the log and in result/eval_summary.txt
    table = open(os.path.join(save, "result", "eval_summary.txt")).read().splitlines()
    assert table[0].split() == ["checkpoint", "list", "EER", "MinDCF0.05", "MinDCF0.01", "CropEER", "WholeEER"]
    assert [row.split()[:1] + row.split()[2:] for row in table[1:]] == [
        [line.split()[0], *line.split()[2::2]] for line in lines]
    assert "\n".join(table) in proc.stderr
    # the same result as naming the newest file, which prints the contract's single line
    newest = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", save,
                      "--initial_model", os.path.join(save, "model", "model000000003.model"))
    assert newest.stdout.strip() == " ".join(lines[1].split()[1:7])


def test_evaluation_writes_only_where_asked(config, trained_run, tmp_path):
    """Started from an empty folder: the newest checkpoints on two trial lists without output names leave it
    empty; --save_embeddings out/emb (no .npz) gives exactly that loadable file per model, and no temporary
    file is left anywhere."""
    cfg, _ = config
    save = trained_run["save"]
    trials = config_trials(cfg)
    copy = tmp_path / "lists" / "copy.txt"
    copy.parent.mkdir()
    copy.write_text(open(trials).read())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    proc = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", save, "--eval_checkpoints", "2",
                    "--test_list", trials, str(copy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()  # a line per checkpoint, each with both lists
    assert len(lines) == 2 and all("trials EER" in line and "copy EER" in line for line in lines)
    assert os.listdir(cwd) == []
    os.mkdir("out")
    one = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", save, "--initial_model",
                   os.path.join(save, "model", "model000000003.model"), "--save_embeddings", "out/emb")
    assert one.returncode == 0, one.stderr[-3000:]
    assert os.listdir(cwd / "out") == ["emb"] and "Embeddings saved to out/emb" in one.stderr
    assert load_embeddings("out/emb").embeddings.shape[1] == 16
    several = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--save_path", save, "--eval_checkpoints",
                       "2", "--save_embeddings", "out/emb")
    assert several.returncode == 0, several.stderr[-3000:]
    assert sorted(os.listdir(cwd / "out")) == ["emb", "emb.model000000002", "emb.model000000003"]
    for name in os.listdir(cwd / "out"):
        assert load_embeddings(str(cwd / "out" / name)).embeddings.shape[1] == 16
    leaked = [os.path.join(d, f) for top in (tmp_path, save) for d, _, files in os.walk(top) for f in files
              if ".tmp-" in f]
    assert leaked == []


@pytest.mark.slow
def test_the_papers_three_commands(config, tmp_path):
    """As the paper ran them, on a demo-sized YAML pair: stage 1 and LMFT with --distributed, then --eval (main() in
    this process; the launcher starts the training processes)."""
    cfg, _ = config
    base = open(cfg).read().replace("max_epoch: 2", "max_epoch: 1").replace("augment: true", "augment: false")
    base = "\n".join(line for line in base.splitlines() if not line.startswith("save_path"))
    stage1, stage2 = tmp_path / "Baseline.yaml", tmp_path / "Baseline_lm.yaml"
    stage1.write_text(base + f"\nsave_path: {tmp_path / 'Baseline'}\n")
    stage2.write_text(base.replace("margin_warmup_epochs: 1", "margin: 0.5")
                      + f"\nsave_path: {tmp_path / 'Baseline_lm'}\n"
                      f"initial_model_from: {tmp_path / 'Baseline'}\n")
    for yaml_file, port in ((stage1, "29541"), (stage2, "29542")):
        proc = run_main(trainSpeakerNet, "--config", str(yaml_file), "--distributed", "--port", port)
        assert proc.returncode == 0, proc.stderr[-3000:]
    first = torch.load(tmp_path / "Baseline" / "model" / "model000000001.model", weights_only=True)["model"]
    second = torch.load(tmp_path / "Baseline_lm" / "model" / "model000000001.model", weights_only=True)["model"]
    backend = [k for k in first if k.startswith("encoder.backend.")]
    assert any(not torch.equal(first[k], second[k]) for k in backend)  # stage 2 changed stage 1's model
    assert max(float((first[k] - second[k]).abs().max()) for k in backend) < 1.0  # ... starting from it
    ev = run_main(trainSpeakerNet_Eval, "--config", str(stage2), "--eval")
    assert ev.returncode == 0 and ev.stdout.split()[:2] == ["model000000001", "EER"], ev.stderr[-3000:]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_interrupted_mid_epoch_ends_with_the_same_weights(config, tmp_path, monkeypatch, workers):
    """Interrupt training inside epoch 2, after a step checkpoint; the same command again resumes there and
    ends with the weights of the uninterrupted run (augmentation on, data loader with and without workers)."""
    cfg, _ = config
    common = ["--config", cfg, "--max_epoch", "2", "--save_every_steps", "2", "--nDataLoaderThread", str(workers)]
    trainSpeakerNet.main([*common, "--save_path", str(tmp_path / "whole")])
    now = {}
    train_epoch, step = ModelTrainer.train_epoch, ModelTrainer.optimizer_step

    def tracked(self, loader, epoch, **options):
        now.update(epoch=epoch, steps=0)
        return train_epoch(self, loader, epoch, **options)

    def interrupted(self):
        step(self)
        now["steps"] += 1
        if now["epoch"] == 2 and now["steps"] == 3:  # after the step-2 checkpoint of epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(ModelTrainer, "train_epoch", tracked)
    monkeypatch.setattr(ModelTrainer, "optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainSpeakerNet.main([*common, "--save_path", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "cut" / "model")) == ["model000000001.model",
                                                              "model000000001.step000000002.model"]
    trainSpeakerNet.main([*common, "--save_path", str(tmp_path / "cut")])
    final = torch.load(tmp_path / "cut" / "model" / "model000000002.model", weights_only=True)["model"]
    want = torch.load(tmp_path / "whole" / "model" / "model000000002.model", weights_only=True)["model"]
    assert sorted(os.listdir(tmp_path / "cut" / "model")) == ["model000000001.model", "model000000002.model"]
    assert all(torch.equal(final[k], want[k]) for k in want)


def start_and_signal(cfg, save, signum, *extra):
    """Start a training run of the tiny YAML to epoch 3 as a real command, send ``signum`` once epoch 1's line is
    out (so it lands in epoch 2), wait."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "trainSpeakerNet.py"), "--config", cfg,
                             "--save_path", str(save), "--max_epoch", "3", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "Epoch 1," in line:
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_a_step_with_a_checkpoint_and_the_same_command_resumes(config, trained_run, tmp_path,
                                                                                 signum):
    """Cut by a real signal in epoch 2 and resumed by the same command, the run ends with the weights of the
    uninterrupted one (the session's trained run: the same YAML, augmentation on)."""
    cfg, _ = config
    code, err = start_and_signal(cfg, tmp_path / "cut", signum)
    assert code == 128 + signum, err[-3000:]
    assert f"Stopped by {signal.Signals(signum).name} at epoch 2, step" in err and "Traceback" not in err
    steps = [f for f in os.listdir(tmp_path / "cut" / "model") if ".step" in f]
    assert len(steps) == 1 and steps[0].startswith("model000000001.step")
    again = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(tmp_path / "cut"), "--max_epoch", "3")
    assert again.returncode == 0 and "Resumed from" in again.stderr, again.stderr[-2000:]
    final = [torch.load(os.path.join(p, "model", "model000000003.model"), weights_only=True)["model"]
             for p in (trained_run["save"], tmp_path / "cut")]
    for key in final[0]:
        torch.testing.assert_close(final[1][key], final[0][key], rtol=1e-5, atol=1e-6)


def test_a_run_of_nan_losses_stops_naming_the_last_checkpoint(config, tmp_path):
    """Training audio that is all NaN: every step is skipped, and after max_bad_steps the run stops (exit 2)."""
    cfg, _ = config
    lines = [line.split(": ", 1)[1] for line in open(cfg).read().splitlines() if line.startswith("train_")]
    nan_dir = tmp_path / "nan"
    entries = []
    for number, line in enumerate(open(lines[0]).read().splitlines()):
        speaker = line.split()[0]
        path = nan_dir / f"{number}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(str(path), np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
        entries.append(f"{speaker} {number}.wav\n")
    (tmp_path / "nan.txt").write_text("".join(entries))
    proc = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(tmp_path / "run"), "--train_list",
                      str(tmp_path / "nan.txt"), "--train_path", str(nan_dir), "--max_bad_steps", "3",
                      "--augment", "false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "3 optimizer steps in a row had non-finite loss or gradients" in proc.stderr
    assert "The last good checkpoint is none" in proc.stderr


@pytest.mark.slow
def test_sigterm_to_the_distributed_launcher_stops_every_rank_at_the_same_step(config, tmp_path):
    cfg, _ = config
    code, err = start_and_signal(cfg, tmp_path / "ddp", signal.SIGTERM, "--augment", "false", "--distributed",
                                 "--port", "29563")
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Stopped by SIGTERM at epoch 2, step" in err and "Traceback" not in err, err[-3000:]
    steps = [f for f in os.listdir(tmp_path / "ddp" / "model") if ".step" in f]
    assert len(steps) == 1
    again = run_script("trainSpeakerNet.py", "--config", cfg, "--save_path", str(tmp_path / "ddp"), "--max_epoch",
                       "3", "--augment", "false", "--distributed", "--port", "29564")  # the ranks' log: a real stderr
    assert again.returncode == 0 and "Resumed from" in again.stderr, again.stderr[-2000:]


def test_a_kaldi_test_folder_scores_like_the_wav_tree(config, tmp_path):
    """test_path may be a Kaldi data folder: wav.scp maps the trial keys to files (here the same files)."""
    cfg, _ = config
    test_path = [line.split(": ", 1)[1] for line in open(cfg).read().splitlines() if line.startswith("test_path")][0]
    keys = sorted({key for line in open(config_trials(cfg)) for key in line.split()[1:]})
    folder = tmp_path / "kaldi_test"
    folder.mkdir()
    (folder / "wav.scp").write_text("".join(f"{key} {os.path.join(test_path, key)}\n" for key in keys))
    (folder / "utt2spk").write_text("".join(f"{key} {key.split('/')[0]}\n" for key in keys))
    tree = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model", "none",
                      "--save_path", str(tmp_path / "a"))
    kaldi = run_main(trainSpeakerNet_Eval, "--config", cfg, "--eval", "--initial_model", "none",
                       "--save_path", str(tmp_path / "b"), "--test_path", str(folder))
    assert kaldi.returncode == 0, kaldi.stderr[-2000:]
    assert result_line(kaldi.stdout) == result_line(tree.stdout)


@pytest.mark.slow
def test_camhfa_learns_like_mhfa(config, tmp_path):
    """model: CAMHFA trains like MHFA on the small demo: its training loss at a fixed margin falls as MHFA's does.
    (The full demo shows the EER falling: README, CA-MHFA.)"""
    cfg, _ = config
    losses = {}
    for model in ("MHFA", "CAMHFA"):
        save = tmp_path / model
        proc = run_main(trainSpeakerNet, "--config", cfg, "--model", model, "--head_nb", "4", "--save_path",
                          str(save), "--augment", "false", "--max_epoch", "8", "--test_interval", "8", "--LR_MHFA",
                          "5e-3", "--margin_warmup_epochs", "0")
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = open(save / "result" / "scores.txt").read().splitlines()
        losses[model] = [float(line.split("TLOSS ")[1].split(",")[0]) for line in lines]
    for model, curve in losses.items():
        assert len(curve) == 8 and curve[-1] < 0.8 * curve[0], (model, losses)


def test_the_same_seed_gives_the_same_run_on_cpu(config, tmp_path):
    """Same seed, same data order, crops, augmentation (a loader worker included) and weights, bit for bit; another
    seed differs."""
    cfg, _ = config
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        proc = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(tmp_path / name), "--seed", seed,
                          "--max_epoch", "1", "--nDataLoaderThread", "1", "--test_list", "")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = torch.load(tmp_path / name / "model" / "model000000001.model", weights_only=True)["model"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def open_fds():
    """Files this process has open, after a garbage collection (objects of a stopped cycle that only reference
    cycles keep, a data loader's iterator and its pipes say, are not open files of the next cycle)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def resident_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.slow
def test_soak_interrupted_and_resumed_cycles_with_bad_files(config, tmp_path, capsys, monkeypatch):
    """In one process: train/evaluate cycles on a list with bad files (dropped), each cut by a SIGTERM at a random
    optimizer step and resumed by the same call, until max_epoch. The run ends with every epoch logged once, the
    dropped count is right every time, and open files and memory stay bounded across cycles."""
    cfg, _ = config
    bad, n = bad_training_list(cfg, tmp_path)  # 2 unusable entries among n + 4
    save = tmp_path / "soak"
    args = ["--config", cfg, "--train_list", bad, "--drop_bad_data", "true", "--save_path", str(save),
            "--max_epoch", "10", "--augment", "true", "--nDataLoaderThread", "1"]
    rng = np.random.default_rng(0)
    real_step = ModelTrainer.optimizer_step
    steps = {"done": 0, "signal_at": 0}

    def step_then_maybe_signal(trainer):
        finite = real_step(trainer)
        steps["done"] += 1
        if steps["done"] == steps["signal_at"]:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once in this (main) thread
        return finite

    monkeypatch.setattr(ModelTrainer, "optimizer_step", step_then_maybe_signal)
    fds, memory, codes = [], [], []
    for _ in range(30):
        steps.update(done=0, signal_at=int(rng.integers(1, 20)))
        try:
            trainSpeakerNet.main(args)
            codes.append(0)
        except SystemExit as stop:
            codes.append(stop.code)
        err = capsys.readouterr().err
        assert err.count(f"dropping 2 of {n + 4} entries") == 1, err[-3000:]
        fds.append(open_fds())
        memory.append(resident_mb())
        if codes[-1] == 0:
            break
    assert codes[-1] == 0 and set(codes[:-1]) == {128 + signal.SIGTERM} and len(codes) >= 4, codes
    lines = open(save / "result" / "scores.txt").read().splitlines()
    assert [int(line.split("Epoch ")[1].split(",")[0]) for line in lines if " step " not in line] == list(range(1, 11))
    assert max(fds) <= fds[0] + 3, fds
    assert max(memory) - memory[0] < 300, memory
    print("soak: exit codes", codes, "open files", fds, "MB", [round(m) for m in memory])


def global_batch_yaml(small_demo, path):
    """A tiny run with global_batch 4 of batch_size 2 (one optimizer step per epoch, see below), deterministic data:
    no augmentation, crops longer than every demo file (at most 2.5 s: wrap-padded to the crop, each crop starts at
    sample 0), no dropout or LayerDrop in the tiny WavLM; plain SGD."""
    d = small_demo
    path.write_text(f"""max_frames: 250
batch_size: 2
global_batch: 4
max_seg_per_spk: 1
nDataLoaderThread: 0
augment: false
max_epoch: 3
test_interval: 1
nClasses: 6
optimizer: sgd
LR_MHFA: 0.5
LR_Transformer: 0.05
nOut: 16
head_nb: 2
compression_dim: 8
pretrained_model_path: {d['checkpoint']}
train_list: {d['train_list']}
train_path: {d['train_dir']}
""")
    return str(path)


def test_a_global_batch_that_does_not_divide_stops_before_training(config, tmp_path):
    cfg, _ = config  # batch_size 4
    save = tmp_path / "gb"
    proc = run_main(trainSpeakerNet, "--config", cfg, "--global_batch", "6", "--save_path", str(save))
    assert proc.returncode == 2 and "error: global_batch 6" in proc.stderr and "batch_size 4 x 1 process" in proc.stderr
    # data-parallel: the process count is part of the check, made before any process starts
    ddp = run_main(trainSpeakerNet, "--config", cfg, "--global_batch", "12", "--distributed", "--nproc_per_node", "2",
                   "--device", "cpu", "--save_path", str(save))
    assert ddp.returncode == 2 and "global_batch 12" in ddp.stderr and "batch_size 4 x 2 processes" in ddp.stderr
    assert "Traceback" not in proc.stderr + ddp.stderr and not save.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["speaker", "utterance"])
def test_global_batch_gives_the_same_weights_on_one_and_two_processes(small_demo, tmp_path, sampler, device):
    """global_batch 4 of batch_size 2: grad_accum 2 on one process (on the device), 1 on two (--distributed: NCCL, one
    process per GPU, in the device tier with exactly two GPUs visible; else gloo CPU processes), and after 3 epochs
    the same weights to float32 rounding (the device's tolerance).

    The same utterances must make each optimizer step. Data-parallel, rank r takes the r-th contiguous share of each
    epoch's batches (the original's sampler, REFERENCE §2), so with several steps per epoch step k of 2 processes is
    batches k and n/2 + k, where one process accumulates batches 2k and 2k + 1. With max_seg_per_spk 1 the epoch is
    6 one-utterance groups: one process keeps 3 batches (the third, short of a step, is dropped), two keep 4 groups,
    one batch each; so each epoch is one step of the same 4 utterances either way. The rest of a step is made equal
    too: the per-rank random streams (crops, augmentation, dropout) would differ by design, so augmentation is off,
    every crop starts at sample 0 and the tiny WavLM has no dropout.

    wespeaker's sampler (the recipes'): rank r takes batches r, r + 2, ... of the epoch's permutation, so step k of
    2 processes is batches 2k and 2k + 1, which one process accumulates; 8 utterances make 2 steps per epoch either
    way. (The batches themselves must be the same: with reg_loss original each batch's CE is divided by its own
    value.)"""
    cfg = global_batch_yaml(small_demo, tmp_path / "gb.yaml")
    port = "29571"
    if sampler == "utterance":
        lines = open(small_demo["train_list"]).read().splitlines()
        lines = lines[::len(lines) // 8][:8]  # several speakers
        (tmp_path / "eight.txt").write_text("\n".join(lines) + "\n")
        speakers = len({line.split()[0] for line in lines})
        text = open(cfg).read().replace(small_demo["train_list"], str(tmp_path / "eight.txt"))
        open(cfg, "w").write(text.replace("nClasses: 6", f"nClasses: {speakers}") + "sampler: utterance\n")
        port = "29572"
    # NCCL needs one GPU per process: with exactly two visible, the two processes run there; otherwise (the CPU
    # run, or a device tier with one GPU) they are gloo CPU processes, against the one process on the device
    nccl = device.type == "cuda" and torch.cuda.device_count() == 2
    on = ["--device", "cuda"] if nccl else ["--device", "cpu", "--nproc_per_node", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(one), "--device", str(device))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es), batch_size 2 each, grad_accum 2: global batch 4 (global_batch; grad_accum derived)" \
        in proc.stderr
    ddp = run_main(trainSpeakerNet, "--config", cfg, "--save_path", str(two), "--distributed", *on, "--port", port,
                   "--dist_timeout", "2")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    if sampler == "utterance":
        assert "4 batches of 2 per epoch (utterance sampler" in proc.stderr
    for save, accum in ((one, 2), (two, 1)):
        recorded = yaml.safe_load(open(save / "result" / "config.yaml"))
        assert (recorded["global_batch"], recorded["grad_accum"]) == (4, accum)
    first = torch.load(one / "model" / "model000000001.model", weights_only=True)["model"]
    a, b = (torch.load(s / "model" / "model000000003.model", weights_only=True)["model"] for s in (one, two))
    assert list(a) == list(b)
    atol, rtol = device_tolerance(device, 1e-6, 1e-5)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)
    assert sum(not torch.equal(a[k], first[k]) for k in a if k.startswith("encoder.")) > 10  # training moved them


def test_a_stage_starts_from_the_average_of_the_previous_stages_newest_checkpoints(config, trained_run, tmp_path):
    """initial_model_average 2 (wespeaker's num_avg between stages): with no learning (rates 0) the new stage's
    first checkpoint is the average of the previous stage's last two; too few checkpoints, or the option without
    initial_model_from, stop before training naming it."""
    cfg, _ = config
    prev = trained_run["save"]
    save = tmp_path / "next"
    proc = run_main(trainSpeakerNet, "--config", cfg, "--initial_model_from", prev, "--initial_model_average", "2",
                    "--max_epoch", "1", "--LR_MHFA", "0", "--LR_Transformer", "0", "--weight_decay", "0",
                    "--test_interval", "5", "--save_path", str(save))
    assert proc.returncode == 0, proc.stderr[-3000:]
    newest = [os.path.join(prev, "model", f"model00000000{k}.model") for k in (2, 3)]
    assert f"Initial model the average of {', '.join(newest)} loaded" in proc.stderr
    two = [torch.load(p, weights_only=True)["model"] for p in newest]
    got = torch.load(save / "model" / "model000000001.model", weights_only=True)["model"]
    moved = 0
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, ((two[0][key].double() + two[1][key].double()) / 2).to(value.dtype),
                                       rtol=1e-6, atol=1e-7, msg=key)
            moved += not torch.equal(two[0][key], two[1][key])
    assert moved > 10  # the two checkpoints differ, so the average is neither of them
    few = run_main(trainSpeakerNet, "--config", cfg, "--initial_model_from", prev, "--initial_model_average", "4",
                   "--save_path", str(tmp_path / "few"))
    assert few.returncode == 2 and "holds 3 checkpoint(s)" in few.stderr and "initial_model_average is 4" in few.stderr
    alone = run_main(trainSpeakerNet, "--config", cfg, "--initial_model_average", "2", "--save_path",
                     str(tmp_path / "alone"))
    assert alone.returncode == 2 and "initial_model_from, which is not set" in alone.stderr
    assert not (tmp_path / "few").exists() and not (tmp_path / "alone").exists()
