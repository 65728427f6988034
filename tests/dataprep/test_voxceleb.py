"""VoxCeleb trees: the training list tool (tools/make_train_list.py), and m4a conversion through ffmpeg
(tools/convert_m4a.py; a stand-in ffmpeg here: the real one is not installed on CI), resumable, with a clear
message when ffmpeg is missing."""
import os
import stat
import sys

import numpy as np
import pytest
import soundfile

from dataprep.lists import read_training_entries
from tools.convert_m4a import main as convert_main
from tools.make_train_list import main as list_main

FAKE_FFMPEG = f"""#!{sys.executable}
# stand-in for ffmpeg: '-i SRC ... TARGET'; decodes SRC with soundfile, fails for names containing 'bad'
import sys, soundfile
args = sys.argv[1:]
src, target = args[args.index("-i") + 1], args[-1]
assert args[args.index("-ar") + 1] == "16000" and args[args.index("-ac") + 1] == "1"
if "bad" in src:
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
data, rate = soundfile.read(src, dtype="int16")
soundfile.write(target, data, rate, format="WAV", subtype="PCM_16")
"""


def tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), np.full(1600, 0.1, dtype=np.float32), 16000, format="WAV")
    return root


NAMES = ["id00012/vidA/00001.m4a", "id00012/vidA/00002.m4a", "id00012/vidB/00001.m4a", "id00015/vidC/00001.m4a"]


def test_train_list_from_a_tree(tmp_path):
    root = tree(tmp_path / "aac", NAMES + ["id00015/vidC/notes.txt"])
    out = tmp_path / "list.txt"
    list_main(["--root", str(root), "--out", str(out), "--as_wav"])
    assert out.read_text().splitlines() == [f"{n.split('/')[0]} {n[:-4]}.wav" for n in NAMES]
    entries = read_training_entries(str(out), "/wav")
    assert [e.speaker for e in entries] == ["id00012"] * 3 + ["id00015"]
    list_main(["--root", str(root), "--out", str(out), "--ext", "m4a"])
    assert out.read_text().splitlines()[0] == "id00012 id00012/vidA/00001.m4a"


def fake_ffmpeg(folder):
    path = folder / "ffmpeg"
    path.write_text(FAKE_FFMPEG)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_conversion_is_resumable_and_reports_failures(tmp_path, capsys):
    src = tree(tmp_path / "aac", NAMES + ["id00015/vidC/bad01.m4a"])
    ffmpeg = fake_ffmpeg(tmp_path)
    dst = tmp_path / "wav"
    with pytest.raises(SystemExit) as exit_:
        convert_main(["--src", str(src), "--dst", str(dst), "--ffmpeg", ffmpeg, "--workers", "2"])
    assert exit_.value.code == 1  # one file failed, and it is named with ffmpeg's message
    assert "bad01.m4a: Invalid data found" in capsys.readouterr().err
    for name in NAMES:
        wav = dst / (name[:-4] + ".wav")
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 1600)
    assert not list(dst.rglob("*.partial.wav")) and not (dst / "id00015/vidC/bad01.wav").exists()
    # a second run converts only what is missing
    os.remove(dst / (NAMES[1][:-4] + ".wav"))
    with pytest.raises(SystemExit):
        convert_main(["--src", str(src), "--dst", str(dst), "--ffmpeg", ffmpeg])
    assert "5 files: 1 converted, 3 already there, 1 failed" in capsys.readouterr().err
    assert soundfile.info(str(dst / (NAMES[1][:-4] + ".wav"))).frames == 1600


def test_missing_ffmpeg_says_how_to_get_it(tmp_path, capsys):
    tree(tmp_path / "aac", NAMES[:1])
    with pytest.raises(SystemExit) as exit_:
        convert_main(["--src", str(tmp_path / "aac"), "--dst", str(tmp_path / "wav"), "--ffmpeg",
                      "no-such-ffmpeg-here"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'no-such-ffmpeg-here' was not found" in err and "install ffmpeg" in err
