"""The Python API (inference/model.py): a model file alone embeds and scores exactly as the evaluation does."""
import numpy as np
import pytest
import soundfile
import torch

import trainSpeakerNet_Eval
from core.audio import load_audio
from core.errors import ConfigError, DataError
from evaluation.embeddings import Embeddings, load_embeddings, save_embeddings
from evaluation.reports import read_score_file
from inference import load_model
from tests.fakes import device_tolerance, save_self_contained_model

# the model's own protocol: 3 crops of 50 frames, whole files over 1.5 s split into chunks (corpus: 0.3-1.9 s)
PROTOCOL = {"eval_frames": 50, "num_eval": 3, "max_eval_seconds": 1.5, "eval_long_files": "chunks"}


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, corpus, tmp_path_factory):
    """A self-contained model file, a trial list over the corpus, a cohort, and the evaluation's embeddings
    and scores (raw and AS-norm) from ``--initial_model`` alone."""
    tmp = tmp_path_factory.mktemp("api")
    path = str(tmp / "m.model")
    save_self_contained_model(tiny_checkpoint, path, **PROTOCOL)
    root, keys = corpus
    trials = tmp / "trials.txt"
    trials.write_text("".join(f"{(i + j) % 2} {keys[i]} {keys[j]}\n" for i in range(len(keys)) for j in range(i)))
    cohort = str(tmp / "cohort.npz")
    rng = np.random.default_rng(0)
    save_embeddings(Embeddings([f"spk{i}" for i in range(12)], rng.normal(size=(12, 16)).astype(np.float32), None),
                    cohort)
    common = ["--eval", "--initial_model", path, "--test_list", str(trials), "--test_path", root,
              "--embedding_cache", "false", "--nDataLoaderThread", "0", "--save_path", str(tmp / "run")]
    trainSpeakerNet_Eval.main([*common, "--score_file", str(tmp / "raw.txt"), "--save_embeddings", str(tmp / "e.npz")])
    trainSpeakerNet_Eval.main([*common, "--score_file", str(tmp / "asnorm.txt"), "--score_norm", "asnorm",
                               "--cohort_embeddings", cohort, "--top_n", "5"])
    return {"model": path, "root": root, "keys": keys, "cohort": cohort,
            "embeddings": load_embeddings(str(tmp / "e.npz")),
            "raw": read_score_file(str(tmp / "raw.txt")), "asnorm": read_score_file(str(tmp / "asnorm.txt"))}


def assert_same(got, want, rows=slice(None), device="cpu"):
    atol, _ = device_tolerance(device, 1e-5, 0)
    np.testing.assert_allclose(got.embeddings, want.embeddings[rows], rtol=0, atol=atol)
    np.testing.assert_allclose(got.crop_embeddings, want.crop_embeddings[rows], rtol=0, atol=atol)
    np.testing.assert_allclose(got.durations, want.durations[rows], rtol=0, atol=1e-6)


def test_api_embeddings_equal_the_evaluations(evaluated, device):
    """load_model on the device of the tier embeds as the eval command did (device tier)."""
    model = load_model(evaluated["model"], device=str(device), nDataLoaderThread=0)
    want, root = evaluated["embeddings"], evaluated["root"]
    assert {k: model.settings[k] for k in PROTOCOL} == PROTOCOL  # the protocol came from the file
    files = model.embed_files(want.keys, root, verbose=False)
    assert files.keys == want.keys
    assert_same(files, want, device=device)
    waves = model.embed([load_audio(f"{root}/{k}") for k in want.keys], keys=want.keys)
    assert waves.keys == want.keys
    assert_same(waves, want, device=device)
    one = model.embed_file(f"{root}/{want.keys[0]}")
    assert_same(one, want, slice(0, 1), device)
    as_tensor = model.embed(torch.from_numpy(load_audio(f"{root}/{want.keys[1]}")))
    assert_same(as_tensor, want, slice(1, 2))


@pytest.mark.parametrize("norm", ["raw", "asnorm"])
def test_api_scores_equal_the_evaluations(evaluated, norm):
    options = {"score_norm": "asnorm", "cohort_embeddings": evaluated["cohort"], "top_n": 5} if norm == "asnorm" else {}
    model = load_model(evaluated["model"], device="cpu", **options)
    _, want, pairs = evaluated[norm]
    root, emb = evaluated["root"], evaluated["embeddings"]
    row = {k: i for i, k in enumerate(emb.keys)}
    for (enroll, test), score in list(zip(pairs, want, strict=True))[:3]:
        assert model.score(f"{root}/{enroll}", f"{root}/{test}") == pytest.approx(score, abs=1e-5)
        one = Embeddings([enroll], emb.embeddings[row[enroll]][None], emb.crop_embeddings[row[enroll]][None])
        wave = load_audio(f"{root}/{test}")
        assert model.score(one, wave) == pytest.approx(score, abs=1e-5)


def test_api_errors_name_the_problem(evaluated, tiny_checkpoint, tmp_path):
    path = evaluated["model"]
    with pytest.raises(ConfigError,
                       match=rf"head_nb is 4 in load_model\(head_nb=...\) but 2 in the model file '{path}'"):
        load_model(path, head_nb=4)
    with pytest.raises(ConfigError, match="unknown option 'num_evals'. Did you mean 'num_eval'"):
        load_model(path, num_evals=2)
    model = load_model(path, device="cpu")
    with pytest.raises(DataError, match="1-D mono waveform"):
        model.embed(np.zeros((2, 3, 400), dtype=np.float32))
    with pytest.raises(DataError, match="hold 2 files"):
        model.score(model.embed(np.zeros((2, 4000), dtype=np.float32)), np.zeros(4000, dtype=np.float32))
    old = tmp_path / "old.model"
    torch.save({"model": torch.load(path, weights_only=True)["model"]}, old)  # a file without its architecture
    with pytest.raises(ConfigError, match="'pretrained_model_path' is not set"):
        load_model(old)
    again = load_model(old, pretrained_model_path=tiny_checkpoint, nOut=16, head_nb=2, compression_dim=8,
                       nClasses=3, device="cpu", **PROTOCOL)
    wave = load_audio(f"{evaluated['root']}/{evaluated['embeddings'].keys[2]}")
    np.testing.assert_allclose(again.embed(wave).embeddings, model.embed(wave).embeddings, rtol=0, atol=1e-6)


def test_api_names_a_file_too_short_to_embed(evaluated, tmp_path):
    """embed_file / embed_files / score of a file shorter than one CNN frame: a DataError naming the file."""
    model = load_model(evaluated["model"], device="cpu", nDataLoaderThread=0)
    short = tmp_path / "short.wav"
    soundfile.write(str(short), np.full(300, 0.1, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"short\.wav' \(300 samples\)"):
        model.embed_file(short)
    with pytest.raises(DataError, match=r"short\.wav' \(300 samples\)"):
        model.score(short, f"{evaluated['root']}/{evaluated['keys'][0]}")
    with pytest.raises(DataError, match=r"short\.wav' \(300 samples\)"):
        model.embed_files(["short.wav"], root=str(tmp_path), verbose=False)
