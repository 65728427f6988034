"""Configuration (core/config.py) over the option table (core/options.py): defaults < YAML < command line,
the whole option ladder (model-file protocol, threshold file, model-file locks) and the roles declared per option,
booleans, choices, unknown keys and bad values named, option combinations checked up front, global_batch -> grad_accum,
saved configs."""
import argparse
import itertools
import os

import pytest
import yaml

import core.config as config_module
from core.config import (
    DEFAULT,
    GIVEN,
    LOCKED,
    MODEL_FILE,
    THRESHOLD_FILE,
    YAML_FILE,
    Config,
    add_options,
    load_config,
    read_yaml,
    resolve_grad_accum,
    save_config,
)
from core.distributed import world_size
from core.errors import CheckpointError, ConfigError
from core.options import (
    CACHE,
    DECIDED_SECTIONS,
    MODEL,
    OPTION_BY_NAME,
    OPTIONS,
    PROTOCOL,
    ROLE_NAMES,
    ROLES,
    THRESHOLD,
    defaults,
    in_sections,
    parse_bool,
    with_role,
)
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


# One value of eval_frames per rung (roles protocol and threshold: every rung takes it), and where it is given.
RUNG_VALUES = {MODEL_FILE: 40, YAML_FILE: 60, THRESHOLD_FILE: 80, GIVEN: 100}
RUNG_PLACES = {MODEL_FILE: "the model file 'm.model'", YAML_FILE: "the config file 'c.yaml'",
               THRESHOLD_FILE: "the threshold file 't.json'", GIVEN: "--{key} on the command line"}


def test_one_option_climbs_every_rung_of_the_ladder():
    """defaults < model-file protocol < YAML < threshold file < command line / API: the value of the highest rung
    given wins, in whatever order the rungs are added, and the Config records which rung and place it came from."""
    start = Config.of_defaults()
    assert start["eval_frames"] == 300 and start.origin("eval_frames") == (DEFAULT, "the defaults")
    for top in RUNG_VALUES:
        rungs = [rung for rung in RUNG_VALUES if rung <= top]
        for order in itertools.permutations(rungs):
            config = start
            for rung in order:
                config = config.climb(rung, {"eval_frames": RUNG_VALUES[rung]}, RUNG_PLACES[rung])
            assert config["eval_frames"] == RUNG_VALUES[top], (top, order)
            assert config.origin("eval_frames") == (top, RUNG_PLACES[top].replace("{key}", "eval_frames"))
    assert start["eval_frames"] == 300  # climbing makes copies


def test_the_command_line_rung_is_load_configs(tmp_path):
    cfg = write(tmp_path, "eval_frames: 60\nnum_eval: 3\n")
    config = load_config(parser(), ["--config", cfg, "--eval_frames", "100"])
    assert config.origin("eval_frames") == (GIVEN, "--eval_frames on the command line")
    assert config.origin("num_eval") == (YAML_FILE, f"the config file '{cfg}'")
    assert config.origin("top_n") == (DEFAULT, "the defaults")
    # a model file's protocol is below both; a threshold file is above the YAML only
    file = config.climb(MODEL_FILE, {"eval_frames": 40, "num_eval": 2, "max_eval_seconds": 9.0}, "the model file 'm'")
    assert (file["eval_frames"], file["num_eval"], file["max_eval_seconds"]) == (100, 3, 9.0)
    record = file.climb(THRESHOLD_FILE, {"eval_frames": 80, "num_eval": 4, "eer": 0.1}, "the threshold file 't'")
    assert (record["eval_frames"], record["num_eval"], record["max_eval_seconds"]) == (100, 4, 9.0)
    assert record.sources() == {"eval_frames": "--eval_frames on the command line",
                                "num_eval": "the threshold file 't'"}  # the rungs where a person wrote a value


def test_a_model_file_locks_its_model_options_and_names_both_places_of_a_conflict():
    config = (Config.of_defaults().climb(YAML_FILE, {"nOut": 32, "head_nb": 2}, "the config file 'c.yaml'")
              .climb(GIVEN, {"normalize_input": False}, "--{key} on the command line"))
    header = {"nOut": 16, "head_nb": 2, "compression_dim": 8, "normalize_input": True, "eval_frames": 40,
              "margin": 0.5, "score_norm": "asnorm"}
    with pytest.raises(ConfigError) as err:
        config.climb(MODEL_FILE, header, "the model file 'm.model'")
    message = str(err.value)
    assert "nOut is 32 in the config file 'c.yaml' but 16 in the model file 'm.model'" in message
    assert "normalize_input is False in --normalize_input on the command line but True in the model file" in message
    assert message.count("in the model file") == 2 and "remove those options" in message  # head_nb agrees
    agreed = config.climb(YAML_FILE, {"nOut": 16}, "the config file 'c.yaml'").climb(
        GIVEN, {"normalize_input": True}, "--{key} on the command line").climb(MODEL_FILE, header, "the model file 'm'")
    assert (agreed["nOut"], agreed["compression_dim"], agreed["eval_frames"]) == (16, 8, 40)  # a default replaced
    assert agreed.origin("compression_dim") == (LOCKED, "the model file 'm'")
    assert (agreed["margin"], agreed["score_norm"]) == (0.2, "none")  # neither model nor protocol: not taken
    # locked whatever the order: a value given after the file is checked too, and loses
    with pytest.raises(ConfigError, match="head_nb is 4 in --head_nb on the command line but 2 in the model file 'm'"):
        agreed.climb(GIVEN, {"head_nb": 4}, "--{key} on the command line")
    assert agreed.climb(GIVEN, {"head_nb": 2}, "--{key} on the command line")["head_nb"] == 2
    # a file's own comparison (an alias of a model plug-in) and its own error for a bad saved value
    assert config.climb(GIVEN, {"model": "alias"}, "--{key}").climb(
        MODEL_FILE, {"model": "MHFA"}, "f", agrees=lambda key, given, fixed: True)["model"] == "MHFA"

    def bad(key, value, error):
        return CheckpointError(f"bad saved {key}")
    with pytest.raises(CheckpointError, match="bad saved nOut"):
        Config.of_defaults().climb(MODEL_FILE, {"nOut": "many"}, "f", bad=bad)
    with pytest.raises(ConfigError, match="Unknown option 'nOutt' in --nOutt on the command line"):
        Config.of_defaults().climb(GIVEN, {"nOutt": 3}, "--{key} on the command line")


def test_the_roles_of_every_option_are_declared():
    """Which options a model file locks, which it lends as its protocol, which form the embedding-cache key and
    which a threshold file sets is declared per option (core.options.ROLES), not implied by section names: every
    option of the sections where roles occur is decided, and the roles fit the ladder."""
    assert set(ROLES) <= set(OPTION_BY_NAME)
    assert all(set(roles) <= set(ROLE_NAMES) and len(set(roles)) == len(roles) for roles in ROLES.values())
    assert [o.name for o in OPTIONS if o.section in DECIDED_SECTIONS and o.name not in ROLES] == []
    assert all(o.roles == frozenset(ROLES.get(o.name, ())) for o in OPTIONS)
    model, protocol, cache, threshold = (set(with_role(role)) for role in (MODEL, PROTOCOL, CACHE, THRESHOLD))
    assert model == {"model", "nOut", "head_nb", "compression_dim", "context", "context_average", "normalize_input",
                     "trainfunc", "nClasses", "subcenters", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets"}
    # (as README's "self-contained model file" lists them)
    assert set(in_sections(("model",))) <= model  # every model option is fixed by the file
    assert protocol == set(in_sections(("extraction",)))
    assert not model & protocol and not model & threshold  # a locked option is never a default nor a file's setting
    assert protocol <= cache and protocol <= threshold  # the protocol changes embeddings; thresholds depend on it
    assert set(in_sections(("model",))) <= cache and {"pretrained_model_path", "normalize_input"} <= cache
    assert {"lora_rank", "lora_alpha", "lora_targets"} <= cache  # the adapters' tensors and scaling
    assert "frontend_kernels" in cache  # its kernels give the same embeddings only to float rounding
    assert not {"trainfunc", "nClasses", "subcenters"} & cache  # the loss's tensors: no embedding changes
    assert {"score_norm", "cohort_embeddings", "threshold"} <= threshold


def test_loader_workers_default_to_what_the_machine_has(monkeypatch):
    """nDataLoaderThread unset: the CPUs this process may use, at most 4 (no more workers than cores on a small
    machine); a given value is used as given; a negative one is refused naming the option."""
    for cpus, want in ((1, 1), (2, 2), (16, 4)):
        monkeypatch.setattr(config_module, "available_cpus", lambda cpus=cpus: cpus)
        assert config_module.loader_workers({"nDataLoaderThread": None}) == want
    assert config_module.loader_workers({"nDataLoaderThread": 0}) == 0
    assert config_module.loader_workers({"nDataLoaderThread": 8}) == 8
    with pytest.raises(ConfigError, match="nDataLoaderThread"):
        config_module.validate({**defaults(), "nDataLoaderThread": -1})
