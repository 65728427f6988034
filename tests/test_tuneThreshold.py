"""tuneThreshold.py, the metrics CLI: the result line, actual DCF and DET plot, errors with exit 2."""
import numpy as np
import pytest

import tuneThreshold
from tests.evaluation.test_metrics import HAND_LABELS, HAND_LINE, HAND_SCORES
from tests.fakes import run_main, run_script, write_file


def test_metrics_cli_actual_dcf_and_det(tmp_path, capsys):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + 1.5 * labels
    (tmp_path / "s.txt").write_text("".join(f"{y} {s:.6f}\n" for y, s in zip(labels, scores, strict=True)))
    tuneThreshold.main([str(tmp_path / "s.txt"), "--threshold", "0.7", "--det", str(tmp_path / "det.png")])
    fields = capsys.readouterr().out.split()
    assert fields[0::2] == ["EER", "MinDCF0.05", "MinDCF0.01", "ActDCF0.05", "ActDCF0.01"]
    rounded = np.round(scores, 6)
    for p, value in ((0.05, fields[7]), (0.01, fields[9])):  # independent count of misses / false alarms
        miss = np.mean(rounded[labels == 1] < 0.7)
        fa = np.mean(rounded[labels == 0] >= 0.7)
        assert float(value) == pytest.approx((miss * p + fa * (1 - p)) / p, abs=1e-5)
    assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "det.png").stat().st_size > 5000


def test_cli_prints_result_line(tmp_path):
    lines = [f"{label} enr{i}.wav tst{i}.wav {s}"
             for i, (label, s) in enumerate(zip(HAND_LABELS, HAND_SCORES, strict=True))]
    path = write_file(tmp_path, "\n".join(lines) + "\n")
    proc = run_main(tuneThreshold, path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HAND_LINE + "\n"
    proc = run_main(tuneThreshold, path, "--p_target", "0.5", "--c_miss", "1", "--c_fa", "1")
    assert proc.returncode == 0 and proc.stdout == "EER 33.3333 MinDCF0.5 0.58333\n"


@pytest.mark.parametrize("text", ["1 0.5\n0 zero\n", ""])
def test_cli_bad_file_exits_2(tmp_path, text):
    path = write_file(tmp_path, text, "bad_scores.txt")
    proc = run_main(tuneThreshold, path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "bad_scores.txt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_file_and_bad_p_target(tmp_path):
    proc = run_main(tuneThreshold, str(tmp_path / "missing.txt"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    path = write_file(tmp_path, "1 0.5\n0 0.1\n")
    proc = run_main(tuneThreshold, path, "--p_target", "1.5")
    assert proc.returncode == 2 and "p_target" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_help():
    proc = run_script("tuneThreshold.py", "--help")
    assert proc.returncode == 0
    for word in ("SCOREFILE", "--p_target", "--c_miss", "--c_fa", "label enroll test score"):
        assert word in proc.stdout
