"""Trial lists: ``label enroll.wav test.wav`` per line (or ``enroll.wav test.wav``, unlabelled)."""
from __future__ import annotations

import itertools
import logging
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from core.errors import ConfigError, TrialListError

logger = logging.getLogger(__name__)


class Trials(NamedTuple):
    labels: Optional[np.ndarray]  # [N] int (None when the list has no labels)
    enroll: List[str]
    test: List[str]
    # As read_trials gives them: the distinct file names (first appearance first) and each trial's two files as
    # indices into them ([2, N]: enroll, test), so that later steps hash each name once, not once per trial.
    names: Optional[List[str]] = None
    codes: Optional[np.ndarray] = None


def file_codes(enroll: List[str], test: List[str]) -> Tuple[List[str], np.ndarray]:
    """(the distinct names of ``enroll`` + ``test`` in order of first appearance, [2, N] index of each)."""
    every = enroll + test
    first: Dict[str, int] = {}  # name -> the position of its first appearance in ``every``: one hash per name
    at = np.fromiter(map(first.setdefault, every, itertools.count()), np.int64, len(every))
    index = np.zeros(len(every), dtype=np.int64)
    index[np.fromiter(first.values(), np.int64, len(first))] = np.arange(len(first))  # first position -> name
    return list(first), index[at].reshape(2, len(enroll))


def _trial_line_error(path: str, lines: Sequence[List[str]]) -> TrialListError:
    """The first bad line of a trial list, as an error naming file, line and fix."""
    widths = {len(f) for f in lines if f}
    for number, fields in enumerate(lines, 1):
        if not fields:
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[0] not in ("0", "1")):
            return TrialListError(f"{path}, line {number}: expected 'label enroll.wav test.wav' with label 0 or 1 "
                              f"(or 'enroll.wav test.wav'), got {' '.join(fields)!r}")
    if widths == {2, 3}:
        return TrialListError(f"Trial list '{path}' mixes labelled and unlabelled lines; label every line or none.")
    return TrialListError(f"Trial list '{path}' has no trials.")


def _field_spans(raw: bytes) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the first byte of each whitespace-separated field of ``raw`` (ASCII whitespace), the byte after its last,
    the number of fields on each non-blank line)."""
    b = np.frombuffer(raw, dtype=np.uint8)
    space = (b == 32) | (b - np.uint8(9) <= np.uint8(4))  # space, or \t \n \v \f \r (9..13; smaller bytes wrap)
    first, last = ~space, ~space
    first[1:] &= space[:-1]  # a field's first byte: none before it, or a space
    last[:-1] &= space[1:]  # its last: the end, or a space after it
    starts, ends = np.flatnonzero(first), np.flatnonzero(last) + 1
    line = np.searchsorted(np.flatnonzero(b == 10), starts)  # line of a field = number of \n before it
    counts = np.bincount(line)
    return starts, ends, counts[counts > 0]


SPAN_CHUNK = 65536  # fields whose bytes span_codes copies at a time (2 MB for 32-byte names)


def span_codes(raw: bytes, starts: np.ndarray, ends: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """What :func:`file_codes` gives, from the bytes of the fields ``raw[starts[i]:ends[i]]``, without a Python
    string per field: (the field of each distinct name's first appearance, in order of appearance; each field's
    name index). Each field's bytes, zero-padded to whole 64-bit words, are hashed with its length, the hashes
    ranked (``np.unique``), and every field compared with the first field of its hash, so the result is exact;
    None if two names ever shared a hash (the caller then hashes the strings). At Vox1-H size (1.1 M names) half
    of :func:`file_codes`' time, in ``SPAN_CHUNK`` fields at a time."""
    lengths = ends - starts
    width = -(-int(lengths.max()) // 8) * 8
    padded = np.frombuffer(raw + bytes(width), dtype=np.uint8)
    windows = np.lib.stride_tricks.as_strided(padded, shape=(len(raw), width), strides=(1, 1), writeable=False)

    kept = (np.arange(width) < np.arange(width + 1)[:, None]).astype(np.uint8) * np.uint8(255)
    kept = kept.view(np.uint64)  # [length, width / 8]: the words' bits that a field of that length keeps

    def words(fields: np.ndarray) -> np.ndarray:  # [n, width / 8]: the fields' bytes, zero after their ends
        return windows[starts[fields]].view(np.uint64) & kept[lengths[fields]]

    digest = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for at in range(0, len(starts), SPAN_CHUNK):
        part = digest[at:at + SPAN_CHUNK]
        for column in words(np.arange(at, at + len(part))).T:  # a multiply-xorshift mix, word by word
            part ^= column
            part *= np.uint64(0xBF58476D1CE4E5B9)
            part ^= part >> np.uint64(31)
    _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
    distinct = words(first)
    for at in range(0, len(starts), SPAN_CHUNK):
        same = inverse[at:at + SPAN_CHUNK]
        if not (np.array_equal(words(np.arange(at, at + len(same))), distinct[same])
                and np.array_equal(lengths[at:at + SPAN_CHUNK], lengths[first[same]])):
            return None
    order = np.argsort(first)  # the distinct names by their first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


def read_trials(path: str) -> Trials:
    """Read ``label enroll test`` lines (or ``enroll test`` for unlabelled lists, all lines alike).

    Vectorised: one ``str.split`` of the whole file; field counts per line and the file names' codes
    (:func:`span_codes`) from the bytes. A bad line raises TrialListError
    naming the file and line number (TrialListError).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise TrialListError(f"Cannot read trial list '{path}': {err}") from err
    starts, ends, widths = _field_spans(raw)  # before the strings exist: its temporaries add nothing to the peak
    tokens = raw.decode("utf-8").split()
    width = int(widths[0]) if widths.size else 0
    if not widths.size or width not in (2, 3) or widths.sum() != len(tokens) or np.any(widths != width):
        raise _trial_line_error(path, [line.split() for line in raw.decode("utf-8").splitlines()])
    labels = None
    if width == 3:
        if not set(tokens[0::3]) <= {"0", "1"}:
            raise _trial_line_error(path, [line.split() for line in raw.decode("utf-8").splitlines()])
        labels = (np.asarray(tokens[0::3]) == "1").astype(np.int64)
    enroll, test = tokens[width - 2::width], tokens[width - 1::width]
    # the byte fields are the tokens one for one: str.split's whitespace includes the bytes', and the counts agree
    coded = span_codes(raw, np.concatenate([starts[width - 2::width], starts[width - 1::width]]),
                       np.concatenate([ends[width - 2::width], ends[width - 1::width]]))
    if coded is None:
        names, codes = file_codes(enroll, test)
    else:
        every = enroll + test
        names, codes = [every[i] for i in coded[0].tolist()], coded[1].reshape(2, len(enroll))
    trials = Trials(labels, enroll, test, names, codes)
    warn_duplicates(path, trials)
    return trials


def warn_duplicates(path: str, trials: Trials) -> int:
    """Log how many trials repeat an earlier (enroll, test) pair (they count twice in the metrics); returns it.
    The warning names the first repeat in the list and the trial number of its earlier copy."""
    names, codes = (trials.names, trials.codes) if trials.codes is not None else file_codes(trials.enroll,
                                                                                           trials.test)
    pair = codes[0] * len(names) + codes[1]  # one integer per (enroll, test) pair
    order = np.argsort(pair, kind="stable")  # equal pairs together, each group in list order
    ranked = pair[order]
    again = np.flatnonzero(ranked[1:] == ranked[:-1]) + 1  # positions (in ``order``) of the repeats
    if again.size:
        repeat = int(order[again].min())  # the first repeat in list order
        first = int(order[np.searchsorted(ranked, pair[repeat])])  # its group's first: the earlier copy
        logger.warning("Trial list '%s' has %d duplicate trial(s) (e.g. '%s %s', trials %d and %d); each copy counts "
                       "in the EER and DCF.", path, again.size, trials.enroll[repeat], trials.test[repeat], first + 1,
                       repeat + 1)
    return int(again.size)


def list_paths(test_list: Sequence[str]) -> List[str]:
    """The trial lists of a run (option ``test_list``), checked to have distinct file names:
    results and score files are named after them."""
    names = [list_name(p) for p in test_list]
    if len(set(names)) != len(names):
        raise ConfigError(f"test_list {list(test_list)}: two lists have the same file name {names}; "
                          f"results and score files are named after it, so rename one.")
    return list(test_list)


def list_name(path: str) -> str:
    """Name of a trial list in result lines and score file names: file name without extension."""
    return os.path.splitext(os.path.basename(path))[0]


def file_lines(path: str) -> Dict[str, int]:
    """The line of a trial list where each file it names appears first (for reports that point there)."""
    first: Dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            for name in line.split()[-2:]:
                first.setdefault(name, number)
    return first
