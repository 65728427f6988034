"""The demo data (synthetic/demo.py) and its command (tools/make_demo_data.py): the small corpus and a tiny WavLM
that the normal loader reads; the command with the same seed writes the same bytes."""
import os
import sys
from pathlib import Path

from frontend.detect import read_ssl_checkpoint
from synthetic.checkpoints import TINY_WAVLM
from synthetic.demo import SMALL_CORPUS
from tools.make_demo_data import main as make_demo_data_main


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_small_demo_has_the_corpus_and_a_loadable_checkpoint(small_demo):
    assert small_demo["n_train_speakers"] == SMALL_CORPUS["n_train_speakers"]
    assert small_demo["n_train_files"] == SMALL_CORPUS["n_train_speakers"] * SMALL_CORPUS["utts_per_speaker"]
    assert small_demo["n_trials"] == SMALL_CORPUS["n_trials"]
    for key in ("train_list", "trials"):
        assert os.path.isfile(small_demo[key]), key
    ckpt = read_ssl_checkpoint(small_demo["checkpoint"])
    assert (ckpt.family, ckpt.config, ckpt.unused) == ("wavlm", TINY_WAVLM, [])


def test_the_command_with_the_same_seed_writes_the_same_bytes(small_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["make_demo_data", "--out", str(tmp_path / "demo"), "--seed", "3", "--small"])
    make_demo_data_main()
    assert f"checkpoint: {tmp_path / 'demo' / 'pretrained' / 'WavLM-Tiny.pt'}" in capsys.readouterr().out
    fresh, fixture = files(tmp_path / "demo"), files(Path(small_demo["checkpoint"]).parents[1])
    assert fresh and {name: fixture.get(name) for name in fresh} == fresh  # other tests may add files to the fixture's
