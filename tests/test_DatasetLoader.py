import collections
import glob

import numpy as np
import pytest
import soundfile
import torch

import DatasetLoader
from core.audio import frames_to_samples, load_audio, wrap_pad
from core.errors import ConfigError, DataError
from DatasetLoader import (
    Augmenter,
    SpeakerBatchSampler,
    TrainDataset,
    UtteranceBatchSampler,
    WespeakerAugmenter,
    mean_power_db,
    read_chunk,
    read_random_segment,
    read_train_list,
    snr_gain,
    train_crop,
)


# ----------------------------------------------------------------------------- crops
def test_crop_lengths():
    assert frames_to_samples(200) == 32240 and frames_to_samples(300) == 48240
    rng = np.random.default_rng(0)
    long = np.arange(50000, dtype=np.float32)
    crop = train_crop(long, 200, rng)
    assert crop.shape == (32240,)
    assert np.array_equal(crop, long[int(crop[0]):int(crop[0]) + 32240])  # contiguous slice


def test_wrap_padding_as_the_original():
    """A file of length <= crop (equal too) gets crop - length + 1 samples by wrap-around."""
    short = np.arange(10, dtype=np.float32)
    padded = wrap_pad(short, 25)
    assert padded.shape == (26,)
    assert np.array_equal(padded, np.concatenate([short, short, short[:6]]))
    assert np.array_equal(wrap_pad(short, 10), np.r_[short, short[:1]])  # exactly a crop: padded too
    assert wrap_pad(short, 9) is short  # longer than the crop: unchanged
    crop = train_crop(short, 1, np.random.default_rng(1))  # 400 samples from 10 (padded to 401, start 0)
    assert crop.shape == (400,) and np.array_equal(crop, np.tile(short, 40))


@pytest.mark.parametrize("length", [50000, 32243, 32241, 32240, 20000])
def test_training_crop_start_is_the_originals(length):
    """start = int(random() * (len - crop)) on the padded length: in [0, len - crop - 1], one draw per crop."""
    audio = np.arange(length, dtype=np.float32)
    rng, same = np.random.default_rng(3), np.random.default_rng(3)
    padded = max(length, 32241)
    starts = []
    for _ in range(200):
        crop = train_crop(audio, 200, rng)
        want = int(same.random() * (padded - 32240))
        assert crop.shape == (32240,) and crop[0] == want % length
        starts.append(want)
    assert max(starts) <= padded - 32240 - 1  # never the last possible start, as the original
    if length == 32243:
        assert set(starts) == {0, 1, 2}


@pytest.mark.parametrize("samples", [50000, 32240, 1000])
def test_segment_read_from_disk_equals_crop_of_whole_file(tmp_path, samples):
    """Reading only the segment gives the samples and leaves the random stream as cropping the loaded file."""
    path = str(tmp_path / "a.wav")
    soundfile.write(path, (np.random.default_rng(0).uniform(-0.5, 0.5, samples)).astype(np.float32), 16000,
                    subtype="FLOAT")
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):
        np.testing.assert_array_equal(read_random_segment(path, 32240, a), train_crop(load_audio(path), 200, b))
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "cut.flac"
    soundfile.write(str(path), np.random.default_rng(0).uniform(-0.5, 0.5, 160000), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])  # the header still says 160000 samples
    with pytest.raises(DataError, match="cut.flac"):
        read_random_segment(str(path), 32240, np.random.default_rng(2))


def test_snr_scaling():
    rng = np.random.default_rng(0)
    clean, noise = rng.normal(0, 0.5, 16000), rng.normal(0, 2.0, 16000)
    scaled = noise * snr_gain(mean_power_db(clean), mean_power_db(noise), 7.0)
    # powers far above the 1e-4 floor: the measured SNR is the requested one
    assert mean_power_db(clean) - mean_power_db(scaled) == pytest.approx(7.0, abs=0.01)
    # the gain uses the floored dB levels, as voxceleb_trainer does
    gain_db = 10 * np.log10(np.mean(clean ** 2) + 1e-4) - 10 * np.log10(np.mean(noise ** 2) + 1e-4) - 7.0
    assert np.allclose(scaled, noise * 10 ** (gain_db / 20))


# ----------------------------------------------------------------------------- sampler
def make_labels(counts):
    return [spk for spk, n in enumerate(counts) for _ in range(n)]


@pytest.mark.parametrize("per_speaker", [1, 2])
def test_sampler_invariants(per_speaker):
    labels = make_labels([30, 5, 12, 8, 20, 3, 9, 15])
    s = SpeakerBatchSampler(labels, batch_size=4, nPerSpeaker=per_speaker, max_seg_per_spk=10, seed=7)
    s.set_epoch(1)
    groups = s.groups()
    assert groups and len(groups) % 4 == 0
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat))  # each utterance at most once
    for g in groups:
        assert len(g) == per_speaker and len({labels[i] for i in g}) == 1
    for b in range(0, len(groups), 4):
        speakers = [labels[g[0]] for g in groups[b:b + 4]]
        assert len(set(speakers)) == 4  # never a speaker twice in a batch
    per_spk = np.bincount([labels[i] for i in flat], minlength=8)
    assert per_spk.max() <= 10  # max_seg_per_spk


def test_sampler_order_depends_on_seed_and_epoch_only():
    labels = make_labels([10] * 12)
    a = SpeakerBatchSampler(labels, batch_size=5, seed=3)
    b = SpeakerBatchSampler(labels, batch_size=5, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert a.groups() == b.groups()
    b.set_epoch(3)
    assert a.groups() != b.groups()


def test_sampler_makes_each_epoch_once(monkeypatch):
    """len(loader) is read every training step: it must not redo the epoch's shuffle each time."""
    s = SpeakerBatchSampler(make_labels([10] * 12), batch_size=4, seed=1)
    made = []
    make = s._make_groups
    monkeypatch.setattr(s, "_make_groups", lambda: made.append(s.epoch) or make())
    assert len(s) == len(list(iter(s))) == len(s) and made == [0]
    s.set_epoch(1)
    first = list(iter(s))
    assert len(s) == len(first) and made == [0, 1]


def test_sampler_ranks_get_equal_contiguous_shares():
    labels = make_labels([10] * 12)
    whole = SpeakerBatchSampler(labels, batch_size=4, seed=1, num_replicas=2, rank=0)
    r1 = SpeakerBatchSampler(labels, batch_size=4, seed=1, num_replicas=2, rank=1)
    assert len(whole.groups()) == len(r1.groups()) and len(whole.groups()) % 4 == 0
    assert not set(map(tuple, whole.groups())) & set(map(tuple, r1.groups()))


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_utterance_sampler_every_utterance_once(replicas):
    """wespeaker's epoch: a permutation of all utterances, the tail that does not fill a batch on every process
    dropped, ranks disjoint; speakers may repeat in a batch; the order depends on seed and epoch."""
    labels = make_labels([30, 5, 12, 8, 20, 3, 9, 15])  # 102 utterances
    ranks = [UtteranceBatchSampler(labels, batch_size=4, seed=7, num_replicas=replicas, rank=r)
             for r in range(replicas)]
    for r in ranks:
        r.set_epoch(2)
    shares = [[g for g in r] for r in ranks]
    assert all(len(g) == 1 for share in shares for g in share)
    flat = [g[0] for share in shares for g in share]
    steps = 102 // replicas // 4  # wespeaker's epoch_iter: utterances // processes // batch
    assert all(len(share) == len(r) == steps * 4 for share, r in zip(shares, ranks, strict=True))
    assert len(flat) == len(set(flat)) == steps * 4 * replicas  # each utterance at most once, few dropped
    assert 102 - len(flat) < 4 * replicas
    whole = UtteranceBatchSampler(labels, batch_size=4 * replicas, seed=7)  # one process, replicas x the batch:
    whole.set_epoch(2)
    one = [g[0] for g in whole]
    for b in range(steps):  # its batch b holds the batch b of every rank, in rank order
        ranks_batch = [g[0] for share in shares for g in share[4 * b:4 * b + 4]]
        assert one[4 * replicas * b:4 * replicas * (b + 1)] == ranks_batch
    batches = [[labels[g[0]] for g in share[b:b + 4]] for share in shares for b in range(0, len(share), 4)]
    assert any(len(set(b)) < 4 for b in batches)  # no per-batch speaker uniqueness
    again = UtteranceBatchSampler(labels, batch_size=4, seed=7, num_replicas=replicas, rank=0)
    again.set_epoch(2)
    assert list(again) == shares[0]
    again.set_epoch(3)
    assert list(again) != shares[0]


def test_utterance_sampler_counts_the_schedules_steps(small_demo):
    """The training loader with 'sampler: utterance' runs files // batch steps per epoch (wespeaker's count)."""
    from core.config import defaults
    from core.distributed import Context
    from runs.train import make_loader
    files = len(open(small_demo["train_list"]).read().split("\n")) - 1
    config = {**defaults(), "train_list": small_demo["train_list"], "train_path": small_demo["train_dir"],
              "batch_size": 3, "sampler": "utterance", "nClasses": 6, "check_data": False, "nDataLoaderThread": 0,
              "max_frames": 20}
    loader = make_loader(config, Context(0, 1, torch.device("cpu")))
    assert len(loader) == files // 3
    loader.sampler.set_epoch(1)
    seen = [i for batch in loader.batch_sampler for g in batch for i in g]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == files // 3 * 3


# ----------------------------------------------------------------------------- lists and audio
def test_train_list_labels_in_sorted_speaker_order(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("id2 a/1.wav\nid1 b/2.wav\n\nid2 a/3.wav\n")
    files, labels, speakers = read_train_list(str(lst), "/data")
    assert speakers == ["id1", "id2"] and labels == [1, 0, 1] and files[1] == "/data/b/2.wav"


def test_train_list_error_names_file_and_line(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("id1 a.wav\nid1 b.wav extra\n")
    with pytest.raises(DataError, match=r"train.txt:2: "):
        read_train_list(str(lst), "")


def test_unreadable_audio_is_an_error_not_a_silent_substitute(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(DataError, match="bad.wav"):
        load_audio(str(bad))
    lst = tmp_path / "train.txt"
    lst.write_text("id1 bad.wav\n")
    dataset = TrainDataset(str(lst), str(tmp_path), max_frames=10)
    with pytest.raises(DataError, match="bad.wav"):
        dataset[[0]]


def test_train_item_shape(small_demo):
    data = small_demo
    plain = TrainDataset(data["train_list"], data["train_dir"], max_frames=50, seed=1)
    wav, label = plain[[0, 1]]
    assert wav.shape == (2, frames_to_samples(50)) and wav.dtype == torch.float32 and label == plain.labels[0]
    with pytest.raises(DataError, match="MUSAN"):
        TrainDataset(data["train_list"], data["train_dir"], max_frames=50, augment=True,
                     musan_path=data["rir_dir"], rir_path=data["rir_dir"])


def augmented_pair(data, stream):
    """The same crop (same random stream: the crop start is its first draw) without and with augmentation."""
    plain = TrainDataset(data["train_list"], data["train_dir"], max_frames=50, seed=1)
    aug = TrainDataset(data["train_list"], data["train_dir"], max_frames=50, augment=True,
                       musan_path=data["musan_dir"], rir_path=data["rir_dir"], seed=1)
    plain.reseed(stream)
    aug.reseed(stream)
    return plain, aug


def test_augmentation_changes_the_crop(small_demo):
    """Each choice but 'clean' changes the audio of the very same crop; 'clean' leaves it as it is."""
    for choice in Augmenter.CHOICES:
        plain, aug = augmented_pair(small_demo, stream=7)
        aug.augmenter.CHOICES = (choice,)  # force this choice
        clean, noisy = plain[[0]][0], aug[[0]][0]
        assert noisy.shape == clean.shape and torch.isfinite(noisy).all()
        if choice == "clean":
            assert torch.equal(noisy, clean)
        else:
            assert (noisy - clean).abs().max() > 1e-3, choice
    changed = 0
    for stream in range(12):  # the uniform choice: most draws change the crop
        plain, aug = augmented_pair(small_demo, stream)
        changed += not torch.equal(plain[[0]][0], aug[[0]][0])
    assert changed >= 6


# ----------------------------------------------------------------------------- the original's augmentation rules
class Recorder:
    """Wraps read_random_segment: records (path, length) of every noise read."""
    def __init__(self, monkeypatch):
        self.reads = []
        real = DatasetLoader.read_random_segment

        def read(path, length, rng):
            self.reads.append((path, length))
            return real(path, length, rng)
        monkeypatch.setattr(DatasetLoader, "read_random_segment", read)


def augmenter(data, **kw):
    return Augmenter(data["musan_dir"], data["rir_dir"], **kw)


@pytest.mark.parametrize("category", ["noise", "speech", "music"])
def test_additive_counts_snr_ranges_and_split_files(small_demo, monkeypatch, category):
    """Each category overlays its number of files (noise 1, speech 3-8, music 1), drawn from the split
    chunks, each scaled to an SNR (mean-power dB, +1e-4) in its range."""
    aug = augmenter(small_demo)
    recorder = Recorder(monkeypatch)
    snrs = []
    real_gain = DatasetLoader.snr_gain
    monkeypatch.setattr(DatasetLoader, "snr_gain", lambda c, n, snr: snrs.append(snr) or real_gain(c, n, snr))
    first = small_demo["train_dir"] + "/" + open(small_demo["train_list"]).readline().split()[1]
    clean = train_crop(load_audio(first), 200, np.random.default_rng(0))
    counts = set()
    for seed in range(40):
        before = len(recorder.reads)
        aug.additive(clean, category, np.random.default_rng(seed))
        counts.add(len(recorder.reads) - before)
    low, high = Augmenter.COUNT[category]
    assert counts <= set(range(low, high + 1)) and (len(counts) > 2 if high > low else counts == {low})
    assert min(snrs) >= Augmenter.SNR[category][0] and max(snrs) <= Augmenter.SNR[category][1]
    for path, length in recorder.reads:
        assert f"/{category}/" in path and path.count("/") - small_demo["musan_dir"].count("/") == 4 and length == 32240
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(32240).astype(np.float32) * 0.01
    assert mean_power_db(noise) == pytest.approx(10 * np.log10(np.mean(noise.astype(np.float64) ** 2) + 1e-4))
    gain = np.sqrt(10 ** ((mean_power_db(clean) - mean_power_db(noise) - 7.5) / 10))  # the original's formula
    assert real_gain(mean_power_db(clean), mean_power_db(noise), 7.5) == pytest.approx(gain, rel=1e-9)


def test_noise_chunks_wrap_for_crops_longer_than_a_chunk(small_demo):
    """A 6 s crop from a 5 s chunk: wrap-padded by crop - length + 1, as the original's loadWAV."""
    chunk = sorted(glob.glob(small_demo["musan_dir"] + "/noise/*/*/*.wav"))[0]
    audio = load_audio(chunk)
    assert audio.shape[0] == 80000
    crop = frames_to_samples(600)
    segment = read_random_segment(chunk, crop, np.random.default_rng(3))
    padded = np.pad(audio, (0, crop - 80000 + 1), mode="wrap")
    start = int(np.random.default_rng(3).random() * (padded.shape[0] - crop))
    assert segment.shape == (crop,) and np.array_equal(segment, padded[start:start + crop])


def test_reverb_unit_energy_rir_full_convolution_truncated(small_demo):
    aug = augmenter(small_demo)
    audio = np.random.default_rng(0).standard_normal(16240).astype(np.float32)
    out = aug.reverberate(audio, np.random.default_rng(5))
    path = aug.rir_files[int(np.random.default_rng(5).integers(len(aug.rir_files)))]
    rir = load_audio(path).astype(np.float64)
    rir /= np.sqrt(np.sum(rir ** 2))
    expected = np.convolve(audio.astype(np.float64), rir, mode="full")[:16240]
    assert out.shape == audio.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_six_choices_uniform_and_aug_prob(small_demo):
    """The original: one of six uniformly, clean included. aug_prob p: clean with probability 1 - p, else one of
    the five others uniformly."""
    rng = np.random.default_rng(0)
    uniform = augmenter(small_demo)
    draws = collections.Counter(uniform.choose(rng) for _ in range(6000))
    assert set(draws) == set(Augmenter.CHOICES) and all(800 < n < 1200 for n in draws.values())
    for p in (0.0, 0.6, 1.0):
        with_p = augmenter(small_demo, aug_prob=p)
        draws = collections.Counter(with_p.choose(rng) for _ in range(5000))
        assert abs(draws["clean"] / 5000 - (1 - p)) < 0.03
        others = [draws[c] for c in Augmenter.CHOICES[1:]]
        assert p == 0 and sum(others) == 0 or min(others) > 5000 * p / 5 * 0.8
    with pytest.raises(ConfigError, match="aug_prob"):
        augmenter(small_demo, aug_prob=1.5)


# ----------------------------------------------------------------------------- wespeaker's augmentation
def wespeaker_augmenter(data, **kw):
    return WespeakerAugmenter(data["musan_raw_dir"], data["rir_dir"], **kw)


def test_read_chunk_as_wespeakers_get_random_chunk(tmp_path):
    """Longer file: a contiguous chunk, every start in [0, n - length] reachable; shorter: repeated from its
    start."""
    audio = (np.arange(1000) % 200 / 400 - 0.25).astype(np.float32)
    path = str(tmp_path / "r.wav")
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    starts = set()
    for seed in range(400):
        chunk = read_chunk(path, 990, np.random.default_rng(seed))
        start = int(np.flatnonzero(np.isclose(audio[:11], chunk[0]))[0]) if chunk[0] in audio[:11] else -1
        assert chunk.shape == (990,) and np.array_equal(chunk, audio[start:start + 990])
        starts.add(start)
    assert starts == set(range(11))
    long = read_chunk(path, 2500, np.random.default_rng(0))
    np.testing.assert_array_equal(long, np.concatenate([audio, audio, audio[:500]]))


def test_wespeaker_noise_one_whole_recording_at_its_category_snr(small_demo, monkeypatch):
    """One recording of raw MUSAN (any category, uniformly over recordings), a chunk of the utterance's length,
    at an SNR in its category's range (noise 0-15, speech 10-30, music 5-15 dB)."""
    aug = wespeaker_augmenter(small_demo)
    assert {c for c, _ in aug.noises} == {"noise", "speech", "music"}
    assert all(soundfile.info(p).duration > 5 for _, p in aug.noises)  # whole recordings, not 5 s chunks
    reads, snrs = [], []
    real_read, real_gain = DatasetLoader.read_chunk, DatasetLoader.snr_gain

    def read(path, length, rng):
        reads.append((path, length, real_read(path, length, rng)))
        return reads[-1][2].copy()
    monkeypatch.setattr(DatasetLoader, "read_chunk", read)
    monkeypatch.setattr(DatasetLoader, "snr_gain", lambda c, n, snr: snrs.append(snr) or real_gain(c, n, snr))
    clean = (0.1 * np.random.default_rng(0).standard_normal(48240)).astype(np.float32)
    by_category = collections.defaultdict(list)
    for seed in range(300):
        out = aug.add_noise(clean, np.random.default_rng(seed))
        path, length, chunk = reads[-1]
        category = path[len(small_demo["musan_raw_dir"]) + 1:].split("/")[0]
        by_category[category].append(snrs[-1])
        assert length == 48240 and out.shape == clean.shape
        gain = np.sqrt(10 ** ((mean_power_db(clean) - mean_power_db(chunk) - snrs[-1]) / 10))  # wespeaker's formula
        np.testing.assert_allclose(out - clean, gain * chunk, rtol=0, atol=1e-6)
    for category, (low, high) in WespeakerAugmenter.SNR.items():
        values = by_category[category]
        assert len(values) > 40 and low <= min(values) < low + 3 and high - 3 < max(values) <= high, category
    assert len({p for p, _, _ in reads}) == len(aug.noises)


def test_wespeaker_choice_and_rescaling(small_demo):
    """aug_prob of the utterances (default 0.6), half reverb, half noise, each rescaled to peak 1 - 1e-4;
    the others untouched."""
    clean = (0.05 * np.random.default_rng(1).standard_normal(16240)).astype(np.float32)
    aug = wespeaker_augmenter(small_demo)
    assert aug.aug_prob == 0.6
    kinds = collections.Counter()
    for seed in range(600):
        rng = np.random.default_rng(seed)
        out = aug(clean, rng)
        if np.array_equal(out, clean):
            kinds["clean"] += 1
            continue
        assert out.dtype == np.float32 and 0.99 < np.max(np.abs(out)) < 1.0
        rng = np.random.default_rng(seed)
        rng.random(), rng.random()
        rng2 = np.random.default_rng(seed)
        rng2.random()
        kind = "reverb" if rng2.random() < 0.5 else "noise"
        expected = aug.reverberate(clean, rng) if kind == "reverb" else aug.add_noise(clean, rng)
        np.testing.assert_allclose(out, expected / (np.max(np.abs(expected)) + 1e-4), rtol=0, atol=1e-6)
        kinds[kind] += 1
    assert abs(kinds["clean"] / 600 - 0.4) < 0.07 and abs(kinds["reverb"] - kinds["noise"]) < 70
    assert wespeaker_augmenter(small_demo, aug_prob=0.0)(clean, np.random.default_rng(0)) is clean


def test_wespeaker_mode_reads_raw_musan_and_says_so(small_demo):
    with pytest.raises(DataError, match="augment_mode: wespeaker.*raw MUSAN"):
        WespeakerAugmenter(small_demo["musan_dir"], small_demo["rir_dir"])
    with pytest.raises(DataError, match="tools.split_musan"):
        Augmenter(small_demo["musan_raw_dir"], small_demo["rir_dir"])
    data = TrainDataset(small_demo["train_list"], small_demo["train_dir"], max_frames=50, augment=True,
                        augment_mode="wespeaker", musan_path=small_demo["musan_raw_dir"],
                        rir_path=small_demo["rir_dir"], aug_prob=1.0, seed=1)
    crop = data[[0]][0]
    assert isinstance(data.augmenter, WespeakerAugmenter) and 0.99 < crop.abs().max() < 1.0


# ----------------------------------------------------------------------------- speed perturbation, kept entries
def test_speed_perturbation_labels_and_resampling(small_demo, tmp_path):
    """Speeds 1.0 / 0.9 / 1.1 as speakers k * n_speakers apart; the audio is resampled by 1/speed (a tone's
    frequency scales with the speed)."""
    data = small_demo
    dataset = TrainDataset(data["train_list"], data["train_dir"], max_frames=100, speed_perturb=True, seed=0)
    n = len(dataset.speakers)
    assert dataset.num_classes == 3 * n
    labels = collections.Counter()
    for stream in range(60):
        dataset.reseed(stream)
        wav, label = dataset[[0]]
        assert wav.shape == (1, frames_to_samples(100)) and label % n == dataset.labels[0]
        labels[label // n] += 1
    assert set(labels) == {0, 1, 2}
    t = np.arange(32000) / 16000
    soundfile.write(str(tmp_path / "tone.wav"), (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000)
    for speed in (0.9, 1.1):
        seg = DatasetLoader.read_speed_segment(str(tmp_path / "tone.wav"), 16000, speed, np.random.default_rng(0))
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(16000)))
        assert seg.shape == (16000,) and np.argmax(spectrum) == pytest.approx(1000 * speed, abs=2)


def test_keep_mask_drops_entries_but_not_speakers(small_demo):
    data = small_demo
    full = TrainDataset(data["train_list"], data["train_dir"], max_frames=50)
    keep = [i % 2 == 0 for i in range(len(full))]
    kept = TrainDataset(data["train_list"], data["train_dir"], max_frames=50, keep=keep)
    assert kept.speakers == full.speakers and len(kept) == sum(keep)
    assert kept.files == full.files[::2] and kept.labels == full.labels[::2]
