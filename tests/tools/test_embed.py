"""tools/embed.py: a folder, a Kaldi data folder or a list embedded into the evaluation's .npz, which re-scores
to the evaluation's scores; an interrupted run continues where it stopped (parts of whole chunks of the batch
plan); two data-parallel processes embed as one does, bit for bit, each continuing its own share."""
import os

import numpy as np
import pytest
import torch

import tools.embed
import trainSpeakerNet_Eval
from core.config import load_config
from core.distributed import Context
from evaluation.embeddings import load_embeddings
from evaluation.reports import read_score_file
from model_files import with_model_file
from tests.fakes import free_port, save_self_contained_model
from tools.embed import main as embed_main


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, corpus, tmp_path_factory):
    """A self-contained model (2 crops of 40 frames), a trial list over the corpus and the evaluation's scores."""
    root, keys = corpus
    tmp = tmp_path_factory.mktemp("embed")
    model = str(tmp / "m.model")
    save_self_contained_model(tiny_checkpoint, model, eval_frames=40, num_eval=2)
    (tmp / "trials.txt").write_text("".join(f"{(i + j) % 2} {keys[i]} {keys[j]}\n"
                                            for i in range(len(keys)) for j in range(i)))
    trainSpeakerNet_Eval.main(["--eval", "--initial_model", model, "--test_list", str(tmp / "trials.txt"),
                               "--test_path", root, "--score_file", str(tmp / "scores.txt"), "--embedding_cache",
                               "false", "--nDataLoaderThread", "0", "--save_path", str(tmp / "run")])
    return model, root, keys, tmp


def rescored(tmp, embeddings, name, trials="trials.txt"):
    trainSpeakerNet_Eval.main(["--eval", "--embeddings", embeddings, "--test_list", str(tmp / trials),
                               "--score_file", str(tmp / name), "--save_path", str(tmp / "run")])
    return read_score_file(str(tmp / name))


def test_embeddings_of_a_list_or_a_folder_rescore_to_the_evaluations(evaluated, capsys):
    model, root, keys, tmp = evaluated
    (tmp / "files.txt").write_text("".join(f"{k.split('/')[0]} {k}\n" for k in keys))  # a training-list layout
    out = str(tmp / "list.npz")
    embed_main(["--initial_model", model, "--input", str(tmp / "files.txt"), "--root", root, "--out", out,
                "--nDataLoaderThread", "0"])
    assert f"embeddings written to {out}" in capsys.readouterr().out
    emb = load_embeddings(out)
    assert emb.keys == keys and emb.crop_embeddings.shape == (len(keys), 2, 16) and emb.durations.shape == (len(keys),)
    _, want, pairs = read_score_file(str(tmp / "scores.txt"))
    _, got, got_pairs = rescored(tmp, out, "from_list.txt")
    assert got_pairs == pairs
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    embed_main(["--initial_model", model, "--input", root, "--out", str(tmp / "folder.npz"),
                "--nDataLoaderThread", "0"])
    folder = load_embeddings(str(tmp / "folder.npz"))
    assert folder.keys == sorted(keys)
    np.testing.assert_allclose(folder.embeddings, emb.embeddings[[keys.index(k) for k in folder.keys]], atol=1e-5)
    assert not os.path.exists(out + ".parts")


def test_a_kaldi_folder_gives_its_utterance_ids(evaluated):
    model, root, keys, tmp = evaluated
    kaldi = tmp / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("".join(f"utt{i} {root}/{k}\n" for i, k in enumerate(keys)))
    embed_main(["--initial_model", model, "--input", str(kaldi / "wav.scp"), "--out", str(tmp / "kaldi.npz"),
                "--nDataLoaderThread", "0"])
    emb = load_embeddings(str(tmp / "kaldi.npz"))
    assert emb.keys == [f"utt{i}" for i in range(len(keys))]
    (tmp / "utt_trials.txt").write_text("".join(f"{(i + j) % 2} utt{i} utt{j}\n"
                                                for i in range(len(keys)) for j in range(i)))
    np.testing.assert_allclose(rescored(tmp, str(tmp / "kaldi.npz"), "kaldi.txt", "utt_trials.txt")[1],
                               read_score_file(str(tmp / "scores.txt"))[1], rtol=0, atol=1e-5)


# 2 s batches: the 8 files are 4 chunks of 2 (5,000 and 12,345 | 2 x 16,000 | 16,000 and 20,000 | 20,000 and
# 30,000 samples), whole files of equal length 2 to a batch, the crops of 2 files together (the default 60 s makes
# the tiny corpus one chunk, one part, one process's share)
BATCHED = ["--eval_batch_seconds", "2", "--nDataLoaderThread", "0"]


def test_an_interrupted_run_continues_where_it_stopped(evaluated, monkeypatch, capsys):
    """Parts of whole chunks: --save_every 1 saves a chunk (2 files, a chunk of the batch plan at a time) per
    part; the second run embeds only the last two chunks."""
    model, root, keys, tmp = evaluated
    (tmp / "plain.txt").write_text("".join(f"{k}\n" for k in keys))
    out = str(tmp / "resumed.npz")
    args = ["--initial_model", model, "--input", str(tmp / "plain.txt"), "--root", root, "--out", out,
            *BATCHED, "--save_every", "1"]
    files, chunks = tools.embed.process_share(keys, root, with_model_file(load_config(tools.embed.embed_parser(),
                                                                                      args)), 0, 1)
    assert sorted(files) == sorted(keys) and chunks == [0, 0, 1, 1, 2, 2, 3, 3]
    extract, asked = tools.embed.extract_files, []

    def stops_after_two_chunks(config, files, *rest, **options):
        if len(asked) == 2:
            raise KeyboardInterrupt
        asked.append(list(files))
        return extract(config, files, *rest, **options)

    monkeypatch.setattr(tools.embed, "extract_files", stops_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        embed_main(args)
    assert sorted(os.listdir(out + ".parts")) == ["000000000.npz", "000000002.npz"] and not os.path.exists(out)
    with pytest.raises(SystemExit):  # another job (other options) refuses the partial results
        embed_main(args + ["--num_eval", "3"])
    assert "holds partial results of another job" in capsys.readouterr().err
    monkeypatch.setattr(tools.embed, "extract_files", lambda config, files, *rest, **options:
                        asked.append(list(files)) or extract(config, files, *rest, **options))
    embed_main(args)
    assert asked == [files[0:2], files[2:4], files[4:6], files[6:8]]  # the second run: only the last two parts
    np.testing.assert_allclose(rescored(tmp, out, "resumed.txt")[1], read_score_file(str(tmp / "scores.txt"))[1],
                               rtol=0, atol=1e-5)
    assert not os.path.exists(out + ".parts")


def test_two_processes_embed_as_one_each_continuing_its_own_share(evaluated, tmp_path, monkeypatch, capfd):
    """--distributed --nproc_per_node 2, batched (2 s: 2 chunks each): each process embeds its share into
    OUT.parts/rank<R>of2/, continuing the parts an interrupted run of that share left (rank 1's here); OUT holds
    one process's embeddings bit for bit in the order of the keys, re-scores to the same score file (byte for
    byte), and OUT.parts is gone."""
    model, root, keys, tmp = evaluated
    (tmp_path / "plain.txt").write_text("".join(f"{k}\n" for k in keys))
    args = ["--initial_model", model, "--input", str(tmp_path / "plain.txt"), "--root", root, *BATCHED]
    embed_main([*args, "--out", str(tmp_path / "one.npz")])
    out = str(tmp_path / "two.npz")
    interrupted = [*args, "--out", out, "--save_every", "2", "--distributed", "--nproc_per_node", "2"]
    config = with_model_file(load_config(tools.embed.embed_parser(), interrupted))
    shares = [tools.embed.process_share(keys, root, config, rank, 2) for rank in (0, 1)]
    assert [len(set(s.chunks)) for s in shares] == [2, 2]  # both processes have work, in two parts each
    share = shares[1]
    extract = tools.embed.extract_files

    def stops_after_one_chunk(config, files, *rest, **options):
        if list(files) != share.files[:2]:
            raise KeyboardInterrupt
        return extract(config, files, *rest, **options)

    monkeypatch.setattr(tools.embed, "extract_files", stops_after_one_chunk)
    folder = tools.embed.share_folder(out + ".parts", 1, 2)
    with pytest.raises(KeyboardInterrupt):  # rank 1 of 2, stopped after its first chunk
        tools.embed.embed_share(config, share, root, folder, tools.embed.job_digest(config, share.files, root), [],
                                Context(1, 2, torch.device("cpu")))
    assert os.listdir(out + ".parts") == ["rank1of2"] and os.listdir(out + ".parts/rank1of2") == ["000000000.npz"]
    monkeypatch.undo()
    capfd.readouterr()
    embed_main([*interrupted, "--port", free_port(), "--dist_timeout", "2"])
    captured = capfd.readouterr()
    assert f"embeddings written to {out}" in captured.out
    assert f"Continuing after 2 of {len(share.files)} files ({folder})" in captured.err, captured.err[-3000:]
    one, two = load_embeddings(str(tmp_path / "one.npz")), load_embeddings(out)
    assert two.keys == one.keys == keys
    for field in ("embeddings", "crop_embeddings", "durations"):
        np.testing.assert_array_equal(getattr(two, field), getattr(one, field))
    assert not os.path.exists(out + ".parts")
    rescored(tmp, str(tmp_path / "one.npz"), "one_scores.txt")
    rescored(tmp, out, "two_scores.txt")
    assert (tmp / "two_scores.txt").read_text() == (tmp / "one_scores.txt").read_text()


def test_parts_of_another_number_of_processes_are_refused(evaluated, tmp_path, capsys):
    """The shares depend on the number of processes: parts made on another number (or in one process) are refused
    with the folder named, before any process starts."""
    model, root, keys, tmp = evaluated
    out = str(tmp_path / "x.npz")
    args = ["--initial_model", model, "--input", root, "--out", out, "--nDataLoaderThread", "0"]
    os.makedirs(out + ".parts/rank0of3")
    for argv, how in (([], "on 3 processes"), (["--distributed", "--nproc_per_node", "2"], "on 3 processes")):
        with pytest.raises(SystemExit) as exit_info:
            embed_main(args + argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"'{out}.parts' holds partial results of a run on 3 processes" in err
        assert f"continue that run {how}" in err
    os.rmdir(out + ".parts/rank0of3")
    (tmp_path / "x.npz.parts" / "000000000.npz").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        embed_main(args + ["--distributed", "--nproc_per_node", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "of a run in one process" in err and "without --distributed" in err
    assert not os.path.exists(out)


def test_errors_name_the_input(evaluated, tmp_path, capsys):
    model, root, keys, tmp = evaluated
    (tmp_path / "twice.txt").write_text(f"{keys[0]}\n{keys[0]}\n")
    for argv, message in ((["--input", str(tmp_path / "none")], "does not exist"),
                          (["--input", str(tmp_path / "twice.txt"), "--root", root], "more than once"),
                          (["--input", str(tmp_path)], "holds no audio files")):
        with pytest.raises(SystemExit) as exit_info:
            embed_main(["--initial_model", model, "--out", str(tmp_path / "x.npz"), *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        embed_main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--save_every" in out and "wav.scp" in out
