"""tools/check_data.py: the data-check command on the small demo: a clean corpus reports every entry usable; a
list with a missing file stops (exit 2) naming list:line and the file; nothing to check is an error."""
import soundfile

from tests.fakes import run_main
from tools import check_data


def test_clean_data_is_reported_usable(small_demo, tmp_path):
    d = small_demo
    entries = len(open(d["train_list"]).read().splitlines())
    proc = run_main(check_data, "--train_list", d["train_list"], "--train_path", d["train_dir"], "--test_list",
                    d["trials"], "--test_path", d["test_dir"], "--save_path", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"training list: {entries} of {entries} entries usable; "
                                   f"trial lists: every file usable")


def test_unusable_entries_are_named_and_stop(small_demo, tmp_path):
    d = small_demo
    bad = tmp_path / "train.txt"
    lines = open(d["train_list"]).read().splitlines()
    soundfile.write(str(tmp_path / "short.wav"), [0.0] * 100, 16000)
    bad.write_text("\n".join(lines + [f"{lines[0].split()[0]} nowhere/x.wav",
                                      f"{lines[0].split()[0]} {tmp_path / 'short.wav'}"]) + "\n")
    proc = run_main(check_data, "--train_list", str(bad), "--train_path", d["train_dir"], "--save_path",
                    str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{bad}:{len(lines) + 1}: " in proc.stderr and "nowhere/x.wav: missing" in proc.stderr
    assert f"{bad}:{len(lines) + 2}: " in proc.stderr and "short.wav" in proc.stderr
    nothing = run_main(check_data, "--save_path", str(tmp_path / "run"))
    assert nothing.returncode == 2 and "Nothing to check" in nothing.stderr
