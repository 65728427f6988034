"""tools/make_cohort.py: a cohort from saved embeddings equals one made with the model."""
import os
import shutil

import numpy as np
import pytest
import torch

from evaluation.embeddings import load_embeddings
from evaluation.extraction import extract_embeddings
from tests.fakes import save_self_contained_model
from tools.make_cohort import main as make_cohort_main


def test_make_cohort_from_embeddings_and_from_model(tiny_model, tiny_encoder, corpus, tmp_path, capsys):
    root, keys = corpus
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{k.split('/')[0]} {k}\n" for k in keys))
    whole = extract_embeddings(tiny_encoder, keys, root, 0, 1, 0, torch.device("cpu"), verbose=False)
    np.savez(tmp_path / "e.npz", keys=np.array(keys), embeddings=whole.embeddings)
    make_cohort_main(["--embeddings", str(tmp_path / "e.npz"), "--train_list", str(train_list),
                      "--out", str(tmp_path / "c.npz")])
    cohort = load_embeddings(str(tmp_path / "c.npz"))
    assert cohort.keys == ["id0", "id1", "id2"]
    for s, speaker in enumerate(cohort.keys):
        rows = [i for i, k in enumerate(keys) if k.startswith(speaker + "/")]
        np.testing.assert_allclose(cohort.embeddings[s], whole.embeddings[rows].mean(axis=0), atol=1e-6)
    make_cohort_main([*tiny_model[1], "--train_list", str(train_list), "--train_path", root, "--max_eval_seconds", "0",
                      "--nDataLoaderThread", "0", "--out", str(tmp_path / "c2.npz")])
    from_model = load_embeddings(str(tmp_path / "c2.npz"))
    assert from_model.keys == cohort.keys
    np.testing.assert_allclose(from_model.embeddings, cohort.embeddings, atol=1e-4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        make_cohort_main(["--embeddings", str(tmp_path / "e.npz"), "--train_list", str(tmp_path / "none.txt"),
                          "--out", str(tmp_path / "c3.npz")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert f"'train_list' points to '{tmp_path / 'none.txt'}', which does not exist" in err
    assert not (tmp_path / "c3.npz").exists()


def test_make_cohort_from_a_model_file_alone(tiny_checkpoint, corpus, tmp_path):
    """A model file written by training needs neither a YAML nor the pre-trained checkpoint (removed here)."""
    root, keys = corpus
    pretrained = tmp_path / "pretrained.pt"
    shutil.copy(tiny_checkpoint, pretrained)
    encoder, _ = save_self_contained_model(str(pretrained), tmp_path / "m.model")
    os.remove(pretrained)
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{k.split('/')[0]} {k}\n" for k in keys))
    make_cohort_main(["--initial_model", str(tmp_path / "m.model"), "--train_list", str(train_list), "--train_path",
                      root, "--max_eval_seconds", "0", "--nDataLoaderThread", "0", "--out", str(tmp_path / "c.npz")])
    cohort = load_embeddings(str(tmp_path / "c.npz"))
    whole = extract_embeddings(encoder, keys, root, 0, 1, 0, torch.device("cpu"), verbose=False)
    for s, speaker in enumerate(cohort.keys):
        rows = [i for i, k in enumerate(keys) if k.startswith(speaker + "/")]
        np.testing.assert_allclose(cohort.embeddings[s], whole.embeddings[rows].mean(axis=0), atol=1e-5)
