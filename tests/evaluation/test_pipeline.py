"""The evaluation pipeline through the eval CLI: several lists in one run, score files, DET PNG, threshold file."""
import json

import numpy as np

import trainSpeakerNet_Eval
from evaluation.embeddings import load_embeddings, save_embeddings
from evaluation.reports import read_score_file
from evaluation.scoring import score_lists
from tests.fakes import random_embeddings, random_trials, run_main


def test_cli_several_lists_score_files_det_and_threshold(tmp_path):
    emb = random_embeddings(30, 6, crops=3)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    np.savez(tmp_path / "c.npz", keys=np.array([f"s{i}" for i in range(12)]),
             embeddings=np.random.default_rng(9).normal(size=(12, 6)).astype(np.float32))
    lists = {}
    for name, seed in (("O", 1), ("H", 2)):
        trials = random_trials(emb.keys, n=50, seed=seed)
        lists[name] = trials
        (tmp_path / f"{name}.txt").write_text("".join(f"{y} {e} {t}\n" for y, e, t in
                                                      zip(trials.labels, trials.enroll, trials.test, strict=True)))
    norm = ["--score_norm", "asnorm", "--top_n", "5", "--cohort_embeddings", str(tmp_path / "c.npz")]
    single = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "O.txt"), "--embeddings",
                        str(tmp_path / "e.npz"), *norm, "--score_file", str(tmp_path / "s.txt"), "--threshold", "0.1")
    assert single.returncode == 0, single.stderr[-2000:]
    line = single.stdout.strip()
    assert line.split()[0::2] == ["EER", "MinDCF0.05", "MinDCF0.01", "ActDCF0.05", "ActDCF0.01"]
    several = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "O.txt"),
                         str(tmp_path / "H.txt"), "--embeddings", str(tmp_path / "e.npz"), *norm, "--score_file",
                         str(tmp_path / "s.txt"))
    assert several.returncode == 0, several.stderr[-2000:]
    out = several.stdout.strip().splitlines()
    assert [o.split()[0] for o in out] == ["O", "H"] and out[0].split()[1:7] == line.split()[:6]
    expected = score_lists(load_embeddings(str(tmp_path / "e.npz")), lists, "asnorm",
                           np.load(tmp_path / "c.npz")["embeddings"], 5)
    for name in ("O", "H"):
        labels, scores, pairs = read_score_file(str(tmp_path / f"s.{name}.txt"))
        assert pairs == list(zip(lists[name].enroll, lists[name].test, strict=True))
        assert labels.tolist() == lists[name].labels.tolist()
        np.testing.assert_allclose(scores, expected[name], atol=1e-6)  # file = in-process scores (6 decimals)
        png = tmp_path / f"s.{name}.txt.det.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        record = json.loads((tmp_path / f"s.{name}.txt.threshold.json").read_text())
        assert record["score_norm"] == "asnorm" and record["top_n"] == 5
        fields = out[["O", "H"].index(name)].split()
        assert f"{record['eer']:.4f}" == fields[2]
    (tmp_path / "c").mkdir()
    combined = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "O.txt"),
                        str(tmp_path / "H.txt"), "--embeddings", str(tmp_path / "e.npz"), *norm, "--score_file",
                        str(tmp_path / "c" / "s.txt"), "--det_plot", "combined")
    assert combined.returncode == 0 and combined.stdout == several.stdout, combined.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.suffix == ".png") == ["s.txt.det.png"]  # one
    missing = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "O.txt"),
                         str(tmp_path / "none.txt"), "--embeddings", str(tmp_path / "e.npz"))
    assert missing.returncode == 2 and "none.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_lists_that_cannot_give_an_eer_are_named(tmp_path):
    emb = random_embeddings(6, 4, crops=0)
    save_embeddings(emb, str(tmp_path / "e.npz"))
    (tmp_path / "targets.txt").write_text(f"1 {emb.keys[0]} {emb.keys[1]}\n1 {emb.keys[2]} {emb.keys[3]}\n")
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "targets.txt"),
                      "--embeddings", str(tmp_path / "e.npz"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "targets.txt' has only label 1" in proc.stderr
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "targets.txt").write_text((tmp_path / "targets.txt").read_text())
    proc = run_main(trainSpeakerNet_Eval, "--eval", "--test_list", str(tmp_path / "targets.txt"),
                      str(tmp_path / "sub" / "targets.txt"), "--embeddings", str(tmp_path / "e.npz"))
    assert proc.returncode == 2 and "same file name" in proc.stderr
