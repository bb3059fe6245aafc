"""Corpus readers, filters and splits.

Readers never drop or shift a line silently: a line that cannot be decoded,
a TSV line without a tab, or two files of different lengths raise
`CorpusError` naming the file and the line. Cleaning (empty, over-long and
badly proportioned pairs, duplicates) happens in `filter_pairs`, which
counts what it removed.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Iterator

from serving.files import atomic_write

BOM = "\ufeff"


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """One source-target pair and where it came from."""

    source: str
    target: str
    origin: str = ""


def _decoded_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, text)` with the newline, CR and a leading BOM removed."""
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a directory, expected a text file")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    f"{path}:{number}: not valid UTF-8 (byte {error.start} of the "
                    f"line, {raw[error.start : error.start + 1]!r})"
                ) from None
            if number == 1 and text.startswith(BOM):
                text = text[1:]
            yield number, text.rstrip("\n").rstrip("\r")


def read_tsv(path: str) -> list[Pair]:
    """Reads `source<TAB>target` lines.

    Args:
        path: str. A UTF-8 file; CRLF line ends and a BOM are accepted.

    Returns:
        One `Pair` per line, in file order. Blank lines are kept as empty
        pairs so that `filter_pairs` counts them.
    """
    pairs = []
    for number, text in _decoded_lines(path):
        if text.strip() == "":
            pairs.append(Pair("", "", f"{path}:{number}"))
            continue
        if "\t" not in text:
            raise CorpusError(f"{path}:{number}: no tab between source and target in {text[:60]!r}")
        source, target = text.split("\t", 1)
        if "\t" in target:
            raise CorpusError(f"{path}:{number}: more than one tab; expected source<TAB>target")
        pairs.append(Pair(source.strip(), target.strip(), f"{path}:{number}"))
    return pairs


def read_parallel(source_path: str, target_path: str) -> list[Pair]:
    """Reads two aligned files, line n of one paired with line n of the other.

    Raises:
        CorpusError: when a file cannot be decoded, or when the files have
            different line counts (naming the first line that has no partner).
    """
    sources = list(_decoded_lines(source_path))
    targets = list(_decoded_lines(target_path))
    if len(sources) != len(targets):
        shorter, longer = (source_path, target_path) if len(sources) < len(targets) else (target_path, source_path)
        raise CorpusError(
            f"{longer}:{min(len(sources), len(targets)) + 1}: line has no partner; "
            f"{source_path} has {len(sources)} lines, {target_path} has {len(targets)}"
            f" ({shorter} is shorter)"
        )
    return [
        Pair(source.strip(), target.strip(), f"{source_path}:{number}")
        for (number, source), (_, target) in zip(sources, targets)
    ]


@dataclasses.dataclass
class FilterReport:
    """Counts of what `filter_pairs` kept and removed, by reason."""

    total: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    length_ratio: int = 0
    duplicate: int = 0

    def summary(self) -> str:
        return (
            f"{self.kept} of {self.total} pairs kept; removed: {self.empty} empty, "
            f"{self.too_long} too long, {self.length_ratio} with an extreme length ratio, "
            f"{self.duplicate} duplicates"
        )


def filter_pairs(
    pairs: Iterable[Pair],
    max_length: int,
    max_length_ratio: float,
    min_length: int = 1,
    deduplicate: bool = True,
    length_fn=len,
    target_length_fn=None,
) -> tuple[list[Pair], FilterReport]:
    """Removes unusable pairs and counts each reason.

    Args:
        pairs: the pairs, in order.
        max_length: int. Longest allowed side, measured with `length_fn`.
        max_length_ratio: float. Largest allowed ratio of the longer side to
            the shorter one.
        min_length: int. Shortest allowed side, in characters.
        deduplicate: bool. Drop repeated (source, target) pairs.
        length_fn: callable. Length of the source (characters by default).
        target_length_fn: callable. Length of the target (`length_fn` when None).
    """
    target_length_fn = target_length_fn or length_fn
    report = FilterReport()
    seen = set()
    kept = []
    for pair in pairs:
        report.total += 1
        if len(pair.source) < max(min_length, 1) or len(pair.target) < max(min_length, 1):
            report.empty += 1
            continue
        source_length, target_length = length_fn(pair.source), target_length_fn(pair.target)
        if source_length > max_length or target_length > max_length:
            report.too_long += 1
            continue
        if max(source_length, target_length) > max_length_ratio * max(min(source_length, target_length), 1):
            report.length_ratio += 1
            continue
        if deduplicate:
            key = (pair.source, pair.target)
            if key in seen:
                report.duplicate += 1
                continue
            seen.add(key)
        kept.append(pair)
    report.kept = len(kept)
    return kept, report


def split_pairs(pairs: list[Pair], dev_size: float, test_size: float, seed: int) -> dict[str, list[Pair]]:
    """Splits by distinct source, so all targets of one source share a split.

    Sizes below 1 are shares of the distinct sources, sizes of 1 and more are
    counts. The split depends only on the seed and the set of sources.

    Returns:
        `{"train": [...], "dev": [...], "test": [...]}`, each in corpus order.
    """
    sources = sorted({pair.source for pair in pairs})
    random.Random(seed).shuffle(sources)

    def count(size: float) -> int:
        return int(round(size * len(sources))) if size < 1 else int(size)

    test_count, dev_count = count(test_size), count(dev_size)
    if test_count + dev_count >= len(sources):
        raise ValueError(
            f"data.dev_size, data.test_size: {dev_count} dev and {test_count} test "
            f"sources leave nothing to train on ({len(sources)} distinct sources)"
        )
    split_of = {}
    for index, source in enumerate(sources):
        split_of[source] = "test" if index < test_count else "dev" if index < test_count + dev_count else "train"
    splits = {"train": [], "dev": [], "test": []}
    for pair in pairs:
        splits[split_of[pair.source]].append(pair)
    return splits


def write_tsv(pairs: Iterable[Pair], path: str) -> None:
    """Writes pairs as `source<TAB>target` lines, atomically."""
    with atomic_write(path, newline="\n") as handle:
        for pair in pairs:
            handle.write(f"{pair.source}\t{pair.target}\n")
