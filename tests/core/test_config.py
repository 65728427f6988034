"""Configuration (core/config.py) over the option table (core/options.py): defaults < YAML < command line,
booleans, choices, unknown keys and bad values named, option combinations checked up front, global_batch -> grad_accum,
saved configs."""
import argparse
import os

import pytest
import yaml

from core.config import add_options, load_config, read_yaml, resolve_grad_accum, save_config
from core.distributed import world_size
from core.errors import ConfigError
from core.options import OPTION_BY_NAME, OPTIONS, parse_bool
from tests.fakes import ROOT


def parser():
    p = argparse.ArgumentParser()
    add_options(p)
    return p


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg = write(tmp_path, "batch_size: 64\nmargin: 0.3\nlr: 5e-4\n")
    c = load_config(parser(), ["--config", cfg, "--margin", "0.5"])
    assert c["batch_size"] == 64          # YAML beats default
    assert c["margin"] == 0.5             # explicit CLI beats YAML
    assert c["lr"] == pytest.approx(5e-4) and isinstance(c["lr"], float)  # YAML '5e-4' is a string
    assert c["max_frames"] == 200         # default kept
    # a CLI value equal to the default still beats the YAML
    assert load_config(parser(), ["--config", cfg, "--batch_size", "120"])["batch_size"] == 120


@pytest.mark.parametrize("text,expected", [("False", False), ("false", False), ("no", False), ("0", False),
                                           ("True", True), ("yes", True), ("1", True)])
def test_boolean_parsing_yaml_and_cli(tmp_path, text, expected):
    cfg = write(tmp_path, f"augment: {text}\n")
    assert load_config(parser(), ["--config", cfg])["augment"] is expected
    assert load_config(parser(), ["--augment", text])["augment"] is expected


def test_bare_flag_means_true_and_bad_bool_fails():
    assert load_config(parser(), ["--eval"])["eval"] is True
    assert load_config(parser(), [])["eval"] is False
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_unknown_key_names_key_file_and_closest(tmp_path):
    cfg = write(tmp_path, "batch_size: 10\nmax_frame: 300\n")
    with pytest.raises(ConfigError) as err:
        load_config(parser(), ["--config", cfg])
    assert "max_frame" in str(err.value) and "max_frames" in str(err.value) and cfg in str(err.value)


def test_bad_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        read_yaml(write(tmp_path, "batch_size: many\n"))


def test_choice_option_yaml_and_cli(tmp_path, capsys):
    assert load_config(parser(), [])["eval_long_files"] == "cut"
    chunks = write(tmp_path, "eval_long_files: chunks\n")
    assert load_config(parser(), ["--config", chunks])["eval_long_files"] == "chunks"
    with pytest.raises(ConfigError, match="eval_long_files.*cut, chunks"):
        read_yaml(write(tmp_path, "eval_long_files: split\n"))
    with pytest.raises(SystemExit):
        load_config(parser(), ["--eval_long_files", "split"])
    assert "invalid choice: 'split'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["Baseline.yaml", "Baseline_lm.yaml"])
def test_original_configs_load(name):
    c = load_config(parser(), ["--config", os.path.join(ROOT, "yaml", name)])
    assert c["model"] == "Baseline.Spk_Encoder" and c["nClasses"] == 5994 and c["augment"] is True
    assert c["margin"] == (0.5 if "lm" in name else 0.2)


def test_distributed_options(tmp_path):
    c = load_config(parser(), ["--distributed", "--nproc_per_node", "3"])
    assert c["distributed"] is True and c["nproc_per_node"] == 3 and c["dist_timeout"] == 30.0


def test_evaluation_options_are_options_like_any_other(tmp_path):
    """score_norm, top_n, cohort_embeddings, qmf_list, ...: YAML and command line, same precedence."""
    cfg = write(tmp_path, "score_norm: asnorm\ntop_n: 100\ncohort_embeddings: c.npz\nqmf_list: q.txt\n")
    c = load_config(parser(), ["--config", cfg, "--top_n", "50"])
    assert (c["score_norm"], c["top_n"], c["cohort_embeddings"], c["qmf_list"]) == ("asnorm", 50, "c.npz", "q.txt")
    assert load_config(parser(), [])["top_n"] == OPTION_BY_NAME["top_n"].default == 300
    assert c.cli == {"top_n"}


@pytest.mark.parametrize("yaml_text,argv,want", [
    ("test_list: a.txt\n", [], ["a.txt"]),
    ("test_list: a.txt,b.txt\n", [], ["a.txt", "b.txt"]),
    ("test_list: [a.txt, b.txt]\n", [], ["a.txt", "b.txt"]),
    ("test_list: a.txt\n", ["--test_list", "b.txt", "c.txt"], ["b.txt", "c.txt"]),
    ("", ["--test_list", "b.txt,c.txt", "d.txt"], ["b.txt", "c.txt", "d.txt"]),
])
def test_several_trial_lists(tmp_path, yaml_text, argv, want):
    assert load_config(parser(), ["--config", write(tmp_path, yaml_text), *argv])["test_list"] == want


def test_option_combinations_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match="cohort_embeddings"):
        load_config(parser(), ["--score_norm", "asnorm"])
    with pytest.raises(ConfigError, match="top_n"):
        load_config(parser(), ["--top_n", "1"])
    with pytest.raises(ConfigError, match="layer_drop"):
        load_config(parser(), ["--layer_drop", "1.5"])


def test_saved_config_records_every_option_and_loads_back(tmp_path):
    c = load_config(parser(), ["--config", write(tmp_path, "score_norm: snorm\ncohort_embeddings: c.npz\n"),
                               "--test_list", "a.txt", "b.txt", "--layer_drop", "0.1"])
    save_config(c, str(tmp_path / "result" / "config.yaml"))
    saved = yaml.safe_load(open(tmp_path / "result" / "config.yaml"))
    assert list(saved) == [o.name for o in OPTIONS]
    again = load_config(parser(), ["--config", str(tmp_path / "result" / "config.yaml")])
    assert {o.name: again[o.name] for o in OPTIONS} == {o.name: c[o.name] for o in OPTIONS}


def test_layer_drop_defaults_to_the_checkpoint(tmp_path):
    assert load_config(parser(), [])["layer_drop"] is None
    assert load_config(parser(), ["--config", write(tmp_path, "layer_drop: null\n")])["layer_drop"] is None
    assert load_config(parser(), ["--layer_drop", "0"])["layer_drop"] == 0.0


def test_sources_say_where_each_given_option_came_from(tmp_path):
    cfg = write(tmp_path, "nOut: 64\nhead_nb: 8\n")
    c = load_config(parser(), ["--config", cfg, "--head_nb", "4"])
    assert c.sources() == {"nOut": f"the config file '{cfg}'", "head_nb": "--head_nb on the command line"}
    copy = c.with_values({"margin": 0.4})
    assert copy["margin"] == 0.4 and c["margin"] == 0.2 and copy.sources() == c.sources()
    assert load_config(parser(), []).sources() == {}


@pytest.mark.parametrize("global_batch,batch_size,processes,grad_accum,want", [
    (0, 120, 4, 3, 3),      # off: grad_accum as given
    (480, 120, 4, 1, 1),    # the paper: 4 GPUs x 120
    (480, 120, 1, 1, 4),    # ... on one device: 4 accumulated batches
    (480, 40, 4, 1, 3),
    (512, 128, 1, 4, 4),    # a grad_accum that agrees is fine
    (8, 2, 2, 1, 2),
])
def test_global_batch_derives_grad_accum(global_batch, batch_size, processes, grad_accum, want):
    config = load_config(parser(), ["--global_batch", str(global_batch), "--batch_size", str(batch_size),
                                    "--grad_accum", str(grad_accum)])
    assert resolve_grad_accum(config, processes) == want


def test_a_global_batch_that_does_not_divide_is_an_error_saying_what_fits():
    config = load_config(parser(), ["--global_batch", "480", "--batch_size", "100"])
    with pytest.raises(ConfigError) as err:
        resolve_grad_accum(config, 4)
    message = str(err.value)
    assert "global_batch 480" in message and "batch_size 100" in message and "4 processes" in message
    assert "400 or 800" in message  # the global batches that would work with this batch_size
    assert "batch_size can be 120, 60, 40, 30, 24, 20" in message  # the batch sizes that keep 480 on 4
    with pytest.raises(ConfigError, match=r"global_batch 8 .* batch_size 16 x 1 process = 16.* 0\.5"):
        resolve_grad_accum(load_config(parser(), ["--global_batch", "8", "--batch_size", "16"]), 1)  # would be 0
    with pytest.raises(ConfigError, match=r"global_batch 100 .*process count that divides it \(1, 2, 4, 5"):
        resolve_grad_accum(load_config(parser(), ["--global_batch", "100", "--batch_size", "4"]), 3)
    with pytest.raises(ConfigError, match="'global_batch' must be 0 \\(off\\) or positive"):
        load_config(parser(), ["--global_batch", "-8"])


def test_global_batch_and_a_grad_accum_that_disagree_is_an_error_naming_both(tmp_path):
    cfg = write(tmp_path, "global_batch: 480\nbatch_size: 120\n")
    config = load_config(parser(), ["--config", cfg, "--grad_accum", "2"])
    with pytest.raises(ConfigError) as err:
        resolve_grad_accum(config, 1)
    message = str(err.value)
    assert "global_batch 480 and grad_accum 2 (--grad_accum on the command line) disagree" in message
    assert "grad_accum 480 / (batch_size 120 x 1 process) = 4" in message and "global_batch to 240" in message
    assert resolve_grad_accum(config, 2) == 2  # on 2 processes they agree


def test_world_size_is_the_process_count_launch_uses(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_size(load_config(parser(), ["--nproc_per_node", "3"])) == 1  # not distributed
    assert world_size(load_config(parser(), ["--distributed", "--device", "cpu", "--nproc_per_node", "3"])) == 3
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "8")  # torchrun / SLURM
    assert world_size(load_config(parser(), ["--distributed", "--device", "cpu"])) == 8
