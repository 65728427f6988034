"""Shared fixtures: tiny official-format WavLM checkpoints, a tiny w2v-BERT 2.0 folder, the small synthetic demo
corpus, a corpus of noise files, the tiny training configuration and one trained run of it; every test runs in its
own temporary folder, and the session fails if it changed the work tree."""
import contextlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402 (after the project root is on sys.path)
import soundfile  # noqa: E402 (after the project root is on sys.path)
import torch  # noqa: E402 (after the project root is on sys.path)

import trainSpeakerNet  # noqa: E402 (after the project root is on sys.path)
from synthetic.checkpoints import TINY_WAVLM, write_tiny_w2vbert, write_tiny_wavlm  # noqa: E402 (after the project root is on sys.path)
from synthetic.demo import make_demo_data  # noqa: E402 (after the project root is on sys.path)
from tests.fakes import run_main, save_tiny_model  # noqa: E402 (after the project root is on sys.path)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="the device tier: 'cuda' (or 'cuda:N') runs only the tests that take the `device` fixture "
                          "(front-end kernels, MHFA/CA-MHFA, mixed precision, export, the API, DDP over NCCL) on "
                          "that GPU; default 'cpu': the whole suite, those tests on the CPU")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (soak, learning, signals, DDP, recipe chains, the paper's "
                                       "three commands, compiled blocks); deselect with -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    """With --device cuda only the device tier runs (the tests that take ``device``); without a GPU it says so."""
    name = config.getoption("--device")
    if name == "cpu":
        return
    if not name.startswith("cuda"):
        raise pytest.UsageError(f"--device {name}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: no CUDA device here (torch.cuda.is_available() is False); the "
                                f"device tier needs a GPU, the default run (--device cpu) covers this machine")
    tier = [item for item in items if "device" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in tier])
    items[:] = tier


@pytest.fixture(scope="session")
def device(request):
    """The device of the device tier (``pytest --device cuda``); the CPU by default."""
    return torch.device(request.config.getoption("--device"))


def work_tree_state():
    """``git status --porcelain --ignored`` of the repository, caches left out; None where there is no git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    caches = ("__pycache__/", ".pytest_cache/", ".ruff_cache/", ".venv/")
    return sorted(line for line in out.stdout.splitlines() if not any(c in line for c in caches))


def pytest_sessionstart(session):
    session.config.work_tree_before = work_tree_state()


def pytest_sessionfinish(session, exitstatus):
    """The suite fails if it changed the work tree: tests write only into temporary folders."""
    before = getattr(session.config, "work_tree_before", None)
    after = work_tree_state() if before is not None else None
    if after is None or after == before:
        return
    changed = sorted(set(after) ^ set(before))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "the test session changed the work tree (git status):\n" + "\n".join(changed[:50])
    if reporter is not None:
        reporter.write_sep("=", "work tree changed", red=True)
        reporter.write_line(message)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def in_session_folder(tmp_path_factory):
    """Session- and module-scoped fixtures run before a test's own folder exists: they run in an empty folder of
    the session, never in the folder pytest was started from."""
    with contextlib.chdir(tmp_path_factory.mktemp("session_cwd")):
        yield


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own empty folder, so that a stray relative output cannot reach the work tree."""
    monkeypatch.chdir(tmp_path)

# lengths in samples: several exactly equal (batched together), others unique, one short
# file (wrap-padded crops) and one beyond the 1.5 s cap used below
LENGTHS = [16000, 20000, 16000, 12345, 20000, 16000, 30000, 5000]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "WavLM-Tiny.pt")
    write_tiny_wavlm(path, seed=1)
    return path


@pytest.fixture(scope="session")
def prenorm_checkpoint(tmp_path_factory):
    """A Large-style (pre-norm, layer-norm CNN, conv bias) tiny WavLM."""
    path = str(tmp_path_factory.mktemp("ckpt") / "WavLM-Tiny-Large.pt")
    config = dict(TINY_WAVLM, extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True,
                  encoder_num_layers=3)
    write_tiny_wavlm(path, seed=2, config=config)
    return path


@pytest.fixture(scope="session")
def tiny_w2vbert(tmp_path_factory):
    """A tiny random-weight w2v-BERT 2.0: a Hugging Face wav2vec2-bert folder as transformers writes one. Shared:
    a test that changes or deletes it works on a copy."""
    folder = str(tmp_path_factory.mktemp("ckpt") / "w2v-bert-tiny")
    write_tiny_w2vbert(folder, seed=5)
    return folder


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """The --small demo corpus plus checkpoint (summary dict from make_demo_data)."""
    return make_demo_data(str(tmp_path_factory.mktemp("demo")), seed=3, small=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Eight random-noise files of LENGTHS samples: (root, keys in an order unlike their lengths)."""
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    keys = []
    for i, n in enumerate(LENGTHS):
        key = f"id{i % 3}/v/{i}.wav"
        os.makedirs(root / os.path.dirname(key), exist_ok=True)
        soundfile.write(str(root / key), (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        keys.append(key)
    return str(root), keys[::-1]  # not in length order


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint, tmp_path_factory):
    """A random tiny SpeakerNet saved as a model file: (its encoder in eval mode, the CLI options that load it)."""
    return save_tiny_model(tiny_checkpoint, tmp_path_factory.mktemp("model") / "m.model")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    return tiny_model[0]


@pytest.fixture(scope="session")
def tiny_config(small_demo, tmp_path_factory):
    """The tiny training YAML on the small demo corpus (2 epochs, augmentation on): (its path, its save_path)."""
    d = small_demo
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    save = tmp_path_factory.mktemp("exp") / "run"
    path.write_text(f"""max_frames: 50
eval_frames: 50
num_eval: 2
batch_size: 4
nDataLoaderThread: 0
augment: true
max_epoch: 2
test_interval: 1
nClasses: 6
margin_warmup_epochs: 1
LR_MHFA: 1e-3
LR_Transformer: 1e-4
nOut: 16
head_nb: 2
compression_dim: 8
pretrained_model_path: {d['checkpoint']}
save_path: {save}
train_list: {d['train_list']}
train_path: {d['train_dir']}
test_list: {d['trials']}
test_path: {d['test_dir']}
musan_path: {d['musan_dir']}
rir_path: {d['rir_dir']}
""")
    return str(path), str(save)


@pytest.fixture(scope="session")
def trained_run(tiny_config, tmp_path_factory):
    """The one trained run of the session: the tiny YAML's command (2 epochs), then the same command with
    --max_epoch 3 (resumes). Tests that only evaluate, resume or inspect a run share it and must not change its
    model folder. Returns the two runs' outputs, the model folder's listing and epoch 2's checkpoint after the
    first command, and the save_path."""
    cfg, save = tiny_config
    with contextlib.chdir(tmp_path_factory.mktemp("cwd")):
        first = run_main(trainSpeakerNet, "--config", cfg)
        assert first.returncode == 0, first.stderr[-3000:]
        models = sorted(os.listdir(os.path.join(save, "model")))
        scores = open(os.path.join(save, "result", "scores.txt")).read().splitlines()
        ckpt2 = torch.load(os.path.join(save, "model", "model000000002.model"), weights_only=True)
        again = run_main(trainSpeakerNet, "--config", cfg, "--max_epoch", "3")
        assert again.returncode == 0, again.stderr[-3000:]
    return {"first": first, "again": again, "models": models, "scores": scores, "ckpt2": ckpt2, "save": save}
