"""tools/embed.py: a folder, a Kaldi data folder or a list embedded into the evaluation's .npz, which re-scores
to the evaluation's scores; an interrupted run continues where it stopped."""
import os

import numpy as np
import pytest

import tools.embed
import trainSpeakerNet_Eval
from evaluation.embeddings import load_embeddings
from evaluation.reports import read_score_file
from tests.fakes import save_self_contained_model
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


def test_an_interrupted_run_continues_where_it_stopped(evaluated, monkeypatch, capsys):
    model, root, keys, tmp = evaluated
    (tmp / "plain.txt").write_text("".join(f"{k}\n" for k in keys))
    out = str(tmp / "resumed.npz")
    args = ["--initial_model", model, "--input", str(tmp / "plain.txt"), "--root", root, "--out", out,
            "--nDataLoaderThread", "0", "--save_every", "3"]
    extract, asked = tools.embed.extract_files, []

    def stops_after_two_chunks(config, files, *rest, **options):
        if len(asked) == 2:
            raise KeyboardInterrupt
        asked.append(list(files))
        return extract(config, files, *rest, **options)

    monkeypatch.setattr(tools.embed, "extract_files", stops_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        embed_main(args)
    assert sorted(os.listdir(out + ".parts")) == ["000000000.npz", "000000003.npz"] and not os.path.exists(out)
    with pytest.raises(SystemExit):  # another job (other options) refuses the partial results
        embed_main(args + ["--num_eval", "3"])
    assert "holds partial results of another job" in capsys.readouterr().err
    monkeypatch.setattr(tools.embed, "extract_files", lambda config, files, *rest, **options:
                        asked.append(list(files)) or extract(config, files, *rest, **options))
    embed_main(args)
    assert asked == [keys[0:3], keys[3:6], keys[6:8]]  # the second run embedded only the last two
    np.testing.assert_allclose(rescored(tmp, out, "resumed.txt")[1], read_score_file(str(tmp / "scores.txt"))[1],
                               rtol=0, atol=1e-5)
    assert not os.path.exists(out + ".parts")


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
