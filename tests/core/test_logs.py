"""Logging set-up (core/logs.py): console for everything, result/scores.txt for the epoch lines only; other
data-parallel ranks show errors, not the warnings rank 0 shows."""
import logging

import pytest

from core.logs import EPOCH_LOGGER, EVERY_RANK, setup_logging


def test_epoch_lines_go_to_the_scores_file_only(tmp_path):
    scores = tmp_path / "result" / "scores.txt"
    setup_logging(str(scores))
    try:
        logging.getLogger("runs.train").info("Data: 10 files")
        logging.getLogger(EPOCH_LOGGER).info("Epoch 1, TAcc 1.00")
        logging.getLogger(EPOCH_LOGGER).info("Epoch 2, TAcc 2.00")
        lines = scores.read_text().splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == ["Epoch 1, TAcc 1.00", "Epoch 2, TAcc 2.00"]
    finally:
        for handler in logging.getLogger(EPOCH_LOGGER).handlers:
            handler.close()
        logging.getLogger(EPOCH_LOGGER).handlers.clear()


@pytest.fixture
def restored_root_logger():
    """setup_logging replaces the root logger's handlers and level: put the test runner's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_other_ranks_log_errors_and_marked_warnings_only(capsys, restored_root_logger):
    """Under DDP a warning every rank meets is logged by rank 0 alone; errors of any rank always show, and a
    warning marked EVERY_RANK (one only that rank may meet) shows there too, with its rank."""
    log = logging.getLogger("dataprep.check")
    setup_logging(main=False, rank=3)
    log.info("Data: 10 files")
    log.warning("Training list: 5 file(s) will be resampled on reading.")
    log.error("rank-local failure")
    log.warning("Data check cache is unreadable", extra=EVERY_RANK)
    err = capsys.readouterr().err
    assert "resampled" not in err and "Data: 10 files" not in err
    assert "ERROR rank 3 dataprep.check: rank-local failure" in err
    assert "WARNING rank 3 dataprep.check: Data check cache is unreadable" in err
    setup_logging(main=True)  # rank 0 (or a single process) logs everything from INFO on
    log.info("Data: 10 files")
    log.warning("Training list: 5 file(s) will be resampled on reading.")
    err = capsys.readouterr().err
    assert "INFO dataprep.check: Data: 10 files" in err and "WARNING dataprep.check: Training list" in err
