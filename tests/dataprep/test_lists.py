"""Training lists: VoxCeleb lists and Kaldi data folders, with errors naming file and line."""
import pytest

from core.errors import DataError
from dataprep.lists import key_paths, read_training_entries, speaker_labels


def test_voxceleb_list_entries_know_their_line(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("id2 a/1.wav\n\nid1 b/2.wav\n")
    entries = read_training_entries(str(lst), "/data")
    assert [(e.speaker, e.path, e.where) for e in entries] == [
        ("id2", "/data/a/1.wav", f"{lst}:1"), ("id1", "/data/b/2.wav", f"{lst}:3")]
    assert speaker_labels(entries) == ([1, 0], ["id1", "id2"])


@pytest.mark.parametrize("text,fragment", [("id1 a.wav\nid1\n", r"train.txt:2: expected"),
                                           ("", "no entries")])
def test_short_or_empty_list(tmp_path, text, fragment):
    lst = tmp_path / "train.txt"
    lst.write_text(text)
    with pytest.raises(DataError, match=fragment):
        read_training_entries(str(lst), "")


def kaldi(tmp_path, scp, utt2spk):
    folder = tmp_path / "kaldi"
    folder.mkdir()
    (folder / "wav.scp").write_text(scp)
    if utt2spk is not None:
        (folder / "utt2spk").write_text(utt2spk)
    return str(folder)


def test_kaldi_folder(tmp_path):
    folder = kaldi(tmp_path, "u2 /abs/x.flac\nu1 rel/y.wav\n", "u1 spkB\nu2 spkA\n")
    entries = read_training_entries(folder, "/root")
    assert [(e.speaker, e.path, e.where) for e in entries] == [
        ("spkA", "/abs/x.flac", f"{folder}/wav.scp:1"), ("spkB", "/root/rel/y.wav", f"{folder}/wav.scp:2")]


@pytest.mark.parametrize("scp,utt2spk,fragment", [
    ("u1 sox x.wav -t wav - |\n", "u1 s\n", r"wav.scp:1: .*is a command"),
    ("u1 x.wav\nu2 y.wav\n", "u1 s\n", r"wav.scp:2: utterance 'u2' has no line in .*utt2spk"),
    ("u1 x.wav\n", None, "no utt2spk"),
    ("u1 x.wav extra\n", "u1 s\n", r"wav.scp:1: expected 'utterance path'"),
])
def test_kaldi_folder_errors(tmp_path, scp, utt2spk, fragment):
    with pytest.raises(DataError, match=fragment):
        read_training_entries(kaldi(tmp_path, scp, utt2spk), "")


def test_kaldi_segments_and_plain_folders_are_refused(tmp_path):
    folder = kaldi(tmp_path, "u1 x.wav\n", "u1 s\n")
    (tmp_path / "kaldi" / "segments").write_text("seg u1 0 1\n")
    with pytest.raises(DataError, match="segments"):
        read_training_entries(folder, "")
    with pytest.raises(DataError, match="folder without wav.scp"):
        read_training_entries(str(tmp_path), "")


def test_evaluation_keys_through_a_kaldi_folder(tmp_path):
    assert key_paths(["id1/a.wav"], "/data") == ["/data/id1/a.wav"]
    folder = kaldi(tmp_path, "utt1 /x/1.wav\nutt2 rel/2.flac\n", "utt1 s\nutt2 s\n")
    assert key_paths(["utt2", "utt1"], folder) == ["rel/2.flac", "/x/1.wav"]
    with pytest.raises(DataError, match="not in .*wav.scp .*'utt3'"):
        key_paths(["utt3"], folder)
