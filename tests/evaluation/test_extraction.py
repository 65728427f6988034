"""Batched extraction equals one-file-at-a-time extraction; caps are logged; files too short to embed are named; the
batch plan (batching rule, chunks) matches the batches the extraction runs."""
import logging
import os

import numpy as np
import pytest
import soundfile
import torch

import trainSpeakerNet_Eval
from core.audio import frames_to_samples, load_audio
from core.errors import ConfigError, DataError
from evaluation import extraction
from evaluation.dataset import EvalDataset, eval_crops, shortest_input
from evaluation.extraction import extract_embeddings
from tests.fakes import run_main


def one_by_one(tiny_encoder, root, keys, eval_frames, num_eval, cap):
    """Reference: each file alone, crops and whole file as separate forward passes."""
    whole, crops = [], []
    with torch.no_grad():
        for key in keys:
            audio = load_audio(os.path.join(root, key))
            whole.append(tiny_encoder(torch.from_numpy(audio[:cap])[None])[0].numpy())
            if eval_frames:
                crops.append(np.stack([tiny_encoder(torch.from_numpy(c)[None])[0].numpy()
                                       for c in eval_crops(audio, eval_frames, num_eval)]))
    return np.stack(whole), (np.stack(crops) if crops else None)


@pytest.mark.parametrize("eval_frames,batch_seconds", [(40, 60.0), (40, 1.3), (0, 60.0)])
def test_batched_equals_one_by_one(tiny_encoder, corpus, eval_frames, batch_seconds, caplog):
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(tiny_encoder, keys, root, eval_frames, 3, 1.5, torch.device("cpu"), verbose=False,
                                 batch_seconds=batch_seconds)
    whole, crops = one_by_one(tiny_encoder, root, keys, eval_frames, 3, 24000)
    assert got.keys == keys
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)
    if eval_frames:
        assert got.crop_embeddings.shape == (len(keys), 3, 16)
        np.testing.assert_allclose(got.crop_embeddings, crops, atol=1e-4, rtol=0)
    else:
        assert got.crop_embeddings is None
    capped = [r.getMessage() for r in caplog.records if "max_eval_seconds" in r.getMessage()]
    assert len(capped) == 1 and "id0/v/6.wav" in capped[0]  # the 30000-sample file, logged once


def test_long_files_in_chunks(tiny_encoder, corpus, caplog):
    """chunks: a file over the cap is the length-weighted mean of its pieces' embeddings; others unchanged."""
    root, keys = corpus
    with caplog.at_level(logging.INFO):
        got = extract_embeddings(tiny_encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False,
                                 long_files="chunks")
    cut = extract_embeddings(tiny_encoder, keys, root, 40, 3, 1.5, torch.device("cpu"), verbose=False)
    long_row = keys.index("id0/v/6.wav")  # 30000 samples > 24000: two pieces of 15000
    audio = load_audio(os.path.join(root, keys[long_row]))
    with torch.no_grad():
        pieces = [tiny_encoder(torch.from_numpy(audio[a:b])[None])[0].numpy() for a, b in ((0, 15000), (15000, 30000))]
    np.testing.assert_allclose(got.embeddings[long_row], np.mean(pieces, axis=0), atol=1e-4, rtol=0)
    assert np.abs(got.embeddings[long_row] - cut.embeddings[long_row]).max() > 1e-3  # all of the file is used
    others = [i for i in range(len(keys)) if i != long_row]
    np.testing.assert_allclose(got.embeddings[others], cut.embeddings[others], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.crop_embeddings, cut.crop_embeddings, atol=1e-5, rtol=0)
    logged = [r.getMessage() for r in caplog.records if "pieces" in r.getMessage()]
    assert len(logged) == 1 and "id0/v/6.wav" in logged[0] and "2 pieces" in logged[0]


def test_encoder_mode_restored_and_missing_file(tiny_encoder, corpus):
    root, keys = corpus
    tiny_encoder.train()
    extract_embeddings(tiny_encoder, keys[:2], root, 0, 1, 0, torch.device("cpu"), verbose=False)
    assert tiny_encoder.training
    tiny_encoder.eval()
    with pytest.raises(DataError, match="missing.wav"):
        extract_embeddings(tiny_encoder, ["missing.wav"], root, 0, 1, 0, torch.device("cpu"), verbose=False)


def test_whole_files_of_near_lengths_share_a_padded_batch(tiny_encoder, corpus):
    root, keys = corpus
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, wav, lengths=None):
            calls.append(None if lengths is None else lengths.tolist())
            return tiny_encoder(wav, lengths)

    got = extract_embeddings(Spy(), keys, root, 0, 1, 1.5, torch.device("cpu"), verbose=False)
    padded = [c for c in calls if c is not None]
    assert [16000, 16000, 16000, 20000, 20000] in padded  # within pad_ratio 1.25
    assert all(max(c) <= 1.25 * min(c) for c in padded)
    whole, _ = one_by_one(tiny_encoder, root, keys, 0, 1, 24000)
    np.testing.assert_allclose(got.embeddings, whole, atol=1e-4, rtol=0)


def write_noise(path, samples, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    soundfile.write(str(path), (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)


def test_a_file_shorter_than_one_frame_is_a_data_error_naming_it(tiny_model, tmp_path):
    """300 samples < one CNN frame (400): with the data check off, the evaluation still stops with a one-line
    DataError (exit 2) that names the file, not the front-end's ValueError about an anonymous waveform."""
    root = tmp_path / "wav"
    for i, (key, samples) in enumerate([("id0/a.wav", 16000), ("id1/tiny.wav", 300), ("id2/c.wav", 16000)]):
        write_noise(root / key, samples, seed=i)
    (tmp_path / "trials.txt").write_text("1 id0/a.wav id2/c.wav\n0 id0/a.wav id1/tiny.wav\n")
    proc = run_main(trainSpeakerNet_Eval, *tiny_model[1], "--eval", "--test_list", str(tmp_path / "trials.txt"),
                    "--test_path", str(root), "--check_data", "false", "--nDataLoaderThread", "0",
                    "--embedding_cache", "false", "--eval_frames", "20", "--num_eval", "2")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and os.path.join(str(root), "id1/tiny.wav") in proc.stderr
    assert "300 samples" in proc.stderr and "400 samples" in proc.stderr


def test_short_files_are_named_by_the_extraction_and_by_the_reader(tiny_encoder, tmp_path):
    write_noise(tmp_path / "ok.wav", 16000)
    write_noise(tmp_path / "short.wav", 399)
    with pytest.raises(DataError, match=r"short\.wav' \(399 samples\)") as caught:
        extract_embeddings(tiny_encoder, ["ok.wav", "short.wav"], str(tmp_path), 20, 2, 0, torch.device("cpu"),
                           verbose=False)
    assert "(400 samples" in str(caught.value) and "ok.wav" not in str(caught.value)
    assert shortest_input(tiny_encoder) == 400 and shortest_input(torch.nn.Linear(2, 2)) == 1
    # the reader checks the decoded length too (a header may not tell the truth)
    dataset = EvalDataset(["short.wav"], str(tmp_path), 20, 2, min_samples=400)
    with pytest.raises(DataError, match="short.wav"):
        dataset[0]
    assert EvalDataset(["short.wav"], str(tmp_path), 20, 2)[0][1][0].shape == (399,)  # no minimum given: read
    # a 400-sample file is embedded
    write_noise(tmp_path / "exact.wav", 400)
    got = extract_embeddings(tiny_encoder, ["exact.wav"], str(tmp_path), 0, 1, 0, torch.device("cpu"), verbose=False)
    assert got.embeddings.shape == (1, 16)
    # direct tensor input keeps the front-end's own ValueError (no file to name)
    with torch.no_grad(), pytest.raises(ValueError, match="399 samples is shorter than one frame") as direct:
        tiny_encoder(torch.zeros(1, 399))
    assert not isinstance(direct.value, DataError)


def test_a_cap_shorter_than_one_frame_is_a_config_error(tiny_encoder, tmp_path):
    write_noise(tmp_path / "ok.wav", 16000)
    with pytest.raises(ConfigError, match=r"max_eval_seconds 0\.01 .*'.*ok\.wav' to 160 samples"):
        extract_embeddings(tiny_encoder, ["ok.wav"], str(tmp_path), 0, 1, 0.01, torch.device("cpu"), verbose=False)


# ----------------------------------------------------------------------------- the batch plan

VARIED = 120  # files of 6,000..64,000 samples (seed 10): at the default batching, forced and natural cuts


def write_varied_corpus(root, count=VARIED, seed=10):
    """``count`` noise files of random lengths under ``root``: their keys (not in length order) and lengths."""
    lengths = np.random.default_rng(seed).integers(6000, 64000, count)
    keys = [f"s{i % 7}/{i}.wav" for i in range(count)]
    for i, (key, samples) in enumerate(zip(keys, lengths, strict=True)):
        write_noise(os.path.join(str(root), key), int(samples), seed=i)
    return keys, [int(n) for n in lengths]


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    root = tmp_path_factory.mktemp("varied")
    return (str(root), *write_varied_corpus(root))


class Probe(torch.nn.Module):
    """An encoder whose embedding of a row says which batch it was in: [sum of the row, sum of the batch, rows,
    padded samples, its length]. Equal embeddings mean equal batches."""

    def forward(self, wav, lengths=None):
        rows, padded = wav.shape
        own = torch.full((rows,), padded) if lengths is None else lengths
        return torch.stack([wav.sum(1), wav.sum().expand(rows), torch.full((rows,), rows), torch.full((rows,), padded),
                            own], 1).float()


def batch_trace(monkeypatch):
    """Every forward pass of the extraction's queues: (whole files or crops, the files in it)."""
    batches = []
    flush = extraction._Batcher.flush

    def recorded(self):
        if self.wavs:
            batches.append(("whole" if self.pad_ratio == extraction.PAD_RATIO else "crops",
                            sorted({slot[0] for slot in self.slots})))
        flush(self)

    monkeypatch.setattr(extraction._Batcher, "flush", recorded)
    return batches


def unspanned(batches, positions, count):
    """The positions 1..count-1 in extraction order before which no batch of ``batches`` holds an earlier file
    (both queues ran there); ``positions``: each file's place in that order."""
    cut = set(range(1, count))
    for _, files in batches:
        places = sorted(positions[i] for i in files)
        cut -= set(range(places[0] + 1, places[-1] + 1))
    return cut


def chunk_starts(chunks, order):
    return {p for p in range(1, len(order)) if chunks[order[p]] != chunks[order[p - 1]]}


@pytest.mark.parametrize("cap,long_files", [(43.75, "cut"), (2.0, "chunks")])
def test_the_plan_cuts_where_both_queues_run_and_forces_a_cut_after_its_bound(varied, monkeypatch, cap, long_files):
    """The default batching (60 s, 5 crops of 300 frames) on 120 files: the chunks of batch_chunks, from the
    lengths alone, start exactly where the extraction's real batches leave both queues empty; where a chunk has
    CHUNK_BATCHES batch limits of inputs, the next file starts another (both queues run there). Up to the first
    forced cut the batches are those of an extraction without a plan (no cut of its own)."""
    root, keys, lengths = varied
    pieces = extraction.whole_pieces(lengths, cap, long_files)
    chunks = extraction.batch_chunks(pieces, 300, 5, 60.0)
    order = extraction.file_order(pieces)
    positions = {int(i): p for p, i in enumerate(order)}
    work = [sum(p) + 5 * frames_to_samples(300) for p in pieces]
    bound = extraction.CHUNK_BATCHES * 60 * 16000
    starts = sorted(chunk_starts(chunks, order))
    forced = [s for s in starts if sum(work[i] for i in order[:s] if chunks[i] == chunks[order[s - 1]]) >= bound]
    natural = [s for s in starts if s not in forced]
    assert forced and natural  # this corpus has both
    for chunk in range(int(chunks.max()) + 1):  # forced cuts bound every chunk
        assert sum(w for w, c in zip(work, chunks, strict=True) if c == chunk) < bound + max(work)

    trace = batch_trace(monkeypatch)
    got = extract_embeddings(Probe(), keys, root, 300, 5, cap, torch.device("cpu"), verbose=False,
                             long_files=long_files)
    planned = list(trace)
    assert unspanned(planned, positions, len(keys)) == set(starts)
    assert max(len(files) for kind, files in planned if kind == "whole") > 1  # batched (padded) whole files
    assert any(len(set(np.array(lengths)[files])) > 1 for kind, files in planned if kind == "whole")
    trace.clear()
    alone = extract_embeddings(Probe(), keys, root, 300, 5, cap, torch.device("cpu"), verbose=False,
                               long_files=long_files, chunks=np.zeros(len(keys), dtype=np.int64))  # no plan
    plain = list(trace)
    first = set(range(1, forced[0]))  # up to the first forced cut
    assert unspanned(plain, positions, len(keys)) & first == set(natural) & first  # the natural cuts are where
    # one extraction empties both queues anyway
    cut = forced[0]
    before = [(kind, files) for kind, files in plain if max(positions[i] for i in files) < cut]
    spanning = [(kind, [i for i in files if positions[i] < cut]) for kind, files in plain
                if min(positions[i] for i in files) < cut <= max(positions[i] for i in files)]
    assert spanning  # not a natural cut: the plan runs these batches early
    planned_before = [(kind, files) for kind, files in planned if max(positions[i] for i in files) < cut]
    assert planned_before[:len(before)] == before and sorted(planned_before[len(before):]) == sorted(spanning)
    assert planned != plain and not (np.array_equal(got.embeddings, alone.embeddings)  # the forced cuts change
                                     and np.array_equal(got.crop_embeddings, alone.crop_embeddings))  # batches
    assert len(planned) <= len(plain) + 2 * len(forced)  # at most a batch more per queue and forced cut


def test_a_list_without_natural_cuts_is_cut_after_the_bound():
    """Equal files of 6.25 s: 9 to a whole-file batch, the crops of 19/5 files to a crop batch, so both queues
    empty together every 171 files; the plan cuts every 46 files instead (16 batch limits of 341,200 samples each),
    the same whatever follows. Without crops the whole-file queue alone decides: a chunk per batch of 9."""
    pieces = [[100000]] * 400
    chunks = extraction.batch_chunks(pieces, 300, 5, 60.0)
    assert np.bincount(chunks).tolist() == [46] * 8 + [400 - 8 * 46]
    assert extraction.batch_chunks(pieces[:200], 300, 5, 60.0).tolist() == chunks[:200].tolist()
    assert np.bincount(extraction.batch_chunks(pieces, 0, 5, 60.0)).tolist() == [9] * 44 + [4]
    # one input per forward pass: every file is a chunk
    assert extraction.batch_chunks([[5000], [4000], [4000]], 40, 2, 0.01).tolist() == [2, 0, 1]


def test_the_batching_rule():
    assert extraction.joins_batch(0, 0, 0, 10**9, 1, 1.0)  # an empty queue takes anything
    assert extraction.joins_batch(2, 100, 120, 125, 375, 1.25)  # 125 <= 1.25 * 100, 3 rows of 125 <= 375
    assert not extraction.joins_batch(2, 100, 120, 126, 1000, 1.25)
    assert not extraction.joins_batch(2, 100, 120, 125, 374, 1.25)  # 3 rows padded to 125 > 374 samples
    assert extraction.joins_batch(2, 100, 120, 80, 360, 1.5) and not extraction.joins_batch(2, 100, 120, 79, 360, 1.5)
