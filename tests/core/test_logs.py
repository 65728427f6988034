"""Logging set-up (core/logs.py): console for everything, result/scores.txt for the epoch lines only."""
import logging

from core.logs import EPOCH_LOGGER, setup_logging


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
