"""Trial lists (evaluation/trials.py): formats, fast reading equal to line-by-line parsing, errors naming the line."""
import logging

import numpy as np
import pytest

from evaluation import trials as trials_module
from evaluation.trials import read_trials


def test_read_trials_formats_and_errors(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 a.wav b.wav\n0 a.wav c.wav\n")
    trials = read_trials(str(path))
    assert list(trials.labels) == [1, 0] and trials.enroll == ["a.wav", "a.wav"] and trials.test[1] == "c.wav"
    path.write_text("a.wav b.wav\n")
    assert read_trials(str(path)).labels is None  # unlabelled: no random label invented
    path.write_text("1 a.wav b.wav\n2 a.wav c.wav\n")
    with pytest.raises(ValueError, match="line 2"):
        read_trials(str(path))
    path.write_text("1 a.wav b.wav\na.wav c.wav\n")
    with pytest.raises(ValueError, match="mixes"):
        read_trials(str(path))


def test_read_trials_equals_line_by_line_parsing(tmp_path):
    rng = np.random.default_rng(5)
    lines = [f"{rng.integers(2)}{' ' * rng.integers(1, 3)}a/{i}.wav\tb/{rng.integers(99)}.wav" for i in range(200)]
    text = "\r\n".join(lines[:100]) + "\r\n\n   \n" + "\n".join(lines[100:])  # CRLF, blank lines, no final \n
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    trials = read_trials(str(path))
    fields = [line.split() for line in lines]
    assert trials.labels.tolist() == [int(f[0]) for f in fields]
    assert trials.enroll == [f[1] for f in fields] and trials.test == [f[2] for f in fields]
    path.write_text("x/ä.wav y/é.wav\nx/b.wav y/c.wav\n", encoding="utf-8")
    unlabelled = read_trials(str(path))
    assert unlabelled.labels is None and unlabelled.enroll == ["x/ä.wav", "x/b.wav"]


@pytest.mark.parametrize("text,fragment", [
    ("1 a b\n0 a b c\n1 a b\n", "line 2"),
    ("1 a b\n1 a b\n2 a c\n", "line 3"),
    ("1 a b\na b\n", "mixes"),
    ("a\n", "line 1"),
    ("\n\n", "no trials"),
])
def test_read_trials_errors_name_the_line(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        read_trials(str(path))


def test_duplicate_trials_are_counted_in_a_warning(tmp_path, caplog):
    path = tmp_path / "dups.txt"
    path.write_text("1 a.wav b.wav\n0 a.wav c.wav\n1 a.wav b.wav\n\n0 a.wav c.wav\n1 b.wav a.wav\n")
    with caplog.at_level(logging.WARNING, logger="evaluation.trials"):
        trials = read_trials(str(path))
    assert len(trials.enroll) == 5  # kept: the metrics count what the list says
    messages = [r.message for r in caplog.records]
    assert len(messages) == 1 and "2 duplicate trial(s)" in messages[0] and "trials 1 and 3" in messages[0]
    caplog.clear()
    path.write_text("1 a.wav b.wav\n0 a.wav c.wav\n")
    read_trials(str(path))
    assert not caplog.records


def test_trials_carry_each_file_once_with_indices_and_the_first_repeat_is_named(tmp_path, caplog):
    """read_trials' names/codes give back every trial's files; the duplicate warning names the first repeat in
    list order and its earlier copy, also when another pair's group comes first by code."""
    path = tmp_path / "t.txt"
    path.write_text("1 c.wav d.wav\n0 a.wav b.wav\n0 a.wav b.wav\n1 c.wav d.wav\n1 d.wav c.wav\n")
    with caplog.at_level(logging.WARNING, logger="evaluation.trials"):
        trials = read_trials(str(path))
    assert trials.names == ["c.wav", "a.wav", "d.wav", "b.wav"]  # first appearance, enrolment side first
    assert [trials.names[i] for i in trials.codes[0]] == trials.enroll
    assert [trials.names[i] for i in trials.codes[1]] == trials.test
    messages = [r.message for r in caplog.records]
    assert len(messages) == 1 and "2 duplicate trial(s)" in messages[0]
    assert "'a.wav b.wav', trials 2 and 3" in messages[0]


def test_file_codes_from_the_bytes_equal_hashing_the_strings(tmp_path, monkeypatch):
    """span_codes (through read_trials): the distinct names in order of first appearance and each trial's two
    indices equal file_codes', across chunks, for names of many lengths (one a prefix of another, one ending in
    a NUL byte, multi-byte UTF-8, tabs and CRLF between fields); a hash shared by two names falls back to
    hashing the strings, with the same result."""
    rng = np.random.default_rng(5)
    pool = [f"id{i:05d}/{'x' * (i % 23)}/{i}.wav" for i in range(300)] + ["a.wav", "a.wav\0", "ä/ö.wav", "a.wa"]
    lines = [f"{rng.integers(2)}\t{pool[rng.integers(len(pool))]} {pool[rng.integers(len(pool))]}\r\n"
             for _ in range(2000)] + ["1 a.wav a.wav\0\n", "0 a.wa ä/ö.wav\n"]
    path = tmp_path / "t.txt"
    path.write_bytes("".join(lines).encode("utf-8"))
    monkeypatch.setattr(trials_module, "SPAN_CHUNK", 333)  # several chunks, the last one short
    read = read_trials(str(path))
    names, codes = trials_module.file_codes(read.enroll, read.test)
    assert read.names == names and np.array_equal(read.codes, codes)
    assert {"a.wav", "a.wav\0", "a.wa", "ä/ö.wav"} <= set(read.names) and len(read.enroll) == 2002
    unique = np.unique
    monkeypatch.setattr(np, "unique", lambda digest, **kw: unique(np.zeros_like(digest), **kw))  # one hash for all
    assert trials_module.span_codes(path.read_bytes(), *trials_module._field_spans(path.read_bytes())[:2]) is None
    again = read_trials(str(path))
    assert again.names == names and np.array_equal(again.codes, codes)
