import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_s2s.data.readers import (
    CorpusError,
    Pair,
    filter_pairs,
    read_parallel,
    read_tsv,
    split_pairs,
    write_tsv,
)


def test_tsv_handles_bom_and_crlf(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_bytes("\ufeffhola\thello\r\nadiós\tgoodbye\r\n".encode("utf-8"))
    pairs = read_tsv(str(path))
    assert [(p.source, p.target) for p in pairs] == [("hola", "hello"), ("adiós", "goodbye")]
    assert pairs[1].origin.endswith("corpus.tsv:2")


def test_missing_tab_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("a\tb\nc\td\nno tab here\ne\tf\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.tsv:3: no tab"):
        read_tsv(str(path))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"a\tb\nc\t\xff\xfe\n")
    with pytest.raises(CorpusError, match=r"corpus\.tsv:2: not valid UTF-8"):
        read_tsv(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CorpusError, match=r"nothere\.tsv: no such file"):
        read_tsv(str(tmp_path / "nothere.tsv"))


def test_parallel_files_with_different_line_counts(tmp_path):
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("one\ntwo\nthree\n", encoding="utf-8")
    target.write_text("uno\ndos\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"src\.txt:3: line has no partner"):
        read_parallel(str(source), str(target))


def test_parallel_files_pair_line_by_line(tmp_path):
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("one\n\nthree\n", encoding="utf-8")
    target.write_text("uno\ndos\ntres\n", encoding="utf-8")
    pairs = read_parallel(str(source), str(target))
    assert [(p.source, p.target) for p in pairs] == [("one", "uno"), ("", "dos"), ("three", "tres")]


def test_filter_counts_every_reason():
    pairs = [
        Pair("abc", "abd"),
        Pair("", "x"),
        Pair("a" * 50, "b" * 50),
        Pair("a", "bbbbbbbbbb"),
        Pair("abc", "abd"),
    ]
    kept, report = filter_pairs(pairs, max_length=20, max_length_ratio=3.0)
    assert kept == [Pair("abc", "abd")]
    assert (report.total, report.kept, report.empty, report.too_long, report.length_ratio, report.duplicate) == (
        5,
        1,
        1,
        1,
        1,
        1,
    )
    kept, report = filter_pairs(pairs, max_length=20, max_length_ratio=3.0, deduplicate=False)
    assert len(kept) == 2 and report.duplicate == 0


def test_split_is_seeded_and_keeps_sources_together():
    pairs = [Pair(f"w{i}", f"p{i}") for i in range(200)] + [Pair("w5", "other")]
    first = split_pairs(pairs, dev_size=0.1, test_size=30, seed=7)
    second = split_pairs(list(reversed(pairs)), dev_size=0.1, test_size=30, seed=7)
    assert {p.source for p in first["test"]} == {p.source for p in second["test"]}
    assert len({p.source for p in first["test"]}) == 30
    assert len({p.source for p in first["dev"]}) == 20
    owners = [name for name, split in first.items() if any(p.source == "w5" for p in split)]
    assert len(owners) == 1 and sum(p.source == "w5" for p in first[owners[0]]) == 2
    other = split_pairs(pairs, dev_size=0.1, test_size=30, seed=8)
    assert {p.source for p in other["test"]} != {p.source for p in first["test"]}


text = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\t\r\n\x85\u2028\u2029\ufeff"),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(text, text), min_size=1, max_size=20))
def test_tsv_round_trip_keeps_every_line_in_order(tmp_path_factory, rows):
    path = str(tmp_path_factory.mktemp("rt") / "c.tsv")
    write_tsv([Pair(s, t) for s, t in rows], path)
    assert [(p.source, p.target) for p in read_tsv(path)] == rows


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_give_an_error_with_file_and_line_or_one_pair_per_line(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("random") / "corpus.tsv"
    path.write_bytes(blob)
    try:
        pairs = read_tsv(str(path))
    except CorpusError as error:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", str(error)), str(error)
        return
    lines = blob.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    assert len(pairs) == len(lines)
    # Each pair is the line it came from: nothing is shifted or merged.
    for number, (pair, raw) in enumerate(zip(pairs, lines), start=1):
        assert pair.origin == f"{path}:{number}"
        text = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r")
        if text.strip():
            assert (pair.source, pair.target) == tuple(part.strip() for part in text.split("\t"))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",))), max_size=15)
)
def test_parallel_files_pair_line_n_with_line_n(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("parallel")
    source, target = folder / "src.txt", folder / "tgt.txt"
    source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    target.write_text("".join(f"{number}\n" for number in range(len(lines))), encoding="utf-8")
    pairs = read_parallel(str(source), str(target))
    assert [int(p.target) for p in pairs] == list(range(len(lines)))
    assert [p.source for p in pairs] == [line.strip() for line in lines]


def test_a_one_megabyte_line_is_read_then_filtered_and_counted(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("a\tb\n" + "x" * (1 << 20) + "\ty\nc\td\n", encoding="utf-8")
    pairs = read_tsv(str(path))
    assert len(pairs) == 3 and len(pairs[1].source) == 1 << 20
    kept, report = filter_pairs(pairs, max_length=100, max_length_ratio=1000.0)
    assert [p.source for p in kept] == ["a", "c"] and report.too_long == 1


def test_empty_file_reads_as_no_pairs(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_bytes(b"")
    assert read_tsv(str(path)) == []


def test_more_than_one_tab_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("a\tb\nc\td\te\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.tsv:2: more than one tab"):
        read_tsv(str(path))


def test_a_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        read_tsv(str(tmp_path))
