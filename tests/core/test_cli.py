"""The CLI runner (core/cli.py) and the toolkit's error types (core/errors.py): toolkit errors end in one line and
exit 2; any other exception is a bug and keeps its traceback; the result is printed with the command's own format;
the distributed options are errors where they would do nothing."""
import pytest

from core.cli import build_parser, run_cli
from core.errors import CheckpointError, ConfigError, DataError, TrialListError


@pytest.mark.parametrize("error", [ConfigError, DataError, TrialListError, CheckpointError])
def test_toolkit_errors_exit_2_with_one_line(error, capsys):
    def action(config):
        raise error("trials.txt, line 3: expected 'label enroll test'")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(build_parser("test"), action, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: trials.txt, line 3: expected 'label enroll test'\n"


@pytest.mark.parametrize("bug", [RuntimeError("bug"), ValueError("plain ValueError"), KeyError("k"), OSError("io")])
def test_other_exceptions_are_bugs_and_propagate(bug):
    def action(config):
        raise bug
    with pytest.raises(type(bug)):
        run_cli(build_parser("test"), action, [])


def test_result_is_shown(capsys):
    assert run_cli(build_parser("test"), lambda config: config["batch_size"], ["--batch_size", "7"],
                   show=lambda r: f"batch {r}") == 7
    assert capsys.readouterr().out == "batch 7\n"


def test_distributed_options_where_they_would_do_nothing_are_errors(tmp_path, capsys):
    """A command that runs in one process refuses --distributed and its settings on the command line, naming the
    option; a data-parallel command refuses the settings without --distributed; from a YAML (shared with
    training) they pass."""
    def one_process(argv, data_parallel=False):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(build_parser("test"), lambda config: "ran", argv, data_parallel=data_parallel)
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "--distributed: this command runs in one process" in one_process(["--distributed"])
    assert "--nproc_per_node: this command runs in one process" in one_process(["--nproc_per_node", "4"])
    assert "--port sets up data-parallel processes, which run only with --distributed" in one_process(
        ["--port", "29500"], data_parallel=True)
    assert run_cli(build_parser("test"), lambda config: "ran", ["--distributed", "--nproc_per_node", "4"],
                   data_parallel=True) == "ran"
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("distributed: true\nnproc_per_node: 4\n")
    assert run_cli(build_parser("test"), lambda config: "ran", ["--config", str(yaml_file)]) == "ran"
