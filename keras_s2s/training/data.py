"""The corpus of a run: loaded, filtered, split, tokenized; splits and tokenizers written
into the run directory, and reused by a resumed run."""

from __future__ import annotations

import dataclasses
import json
import os

from keras_s2s.config import Config
from keras_s2s.data.datasets import load_pairs
from keras_s2s.data.readers import CorpusError, Pair, filter_pairs, read_parallel, read_tsv, split_pairs, write_tsv
from keras_s2s.data.tokenizers import build_tokenizers, load_tokenizers, save_tokenizers, tokenizer_files
from keras_s2s.training.distribution import log
from serving.files import atomic_write


@dataclasses.dataclass
class PreparedData:
    """Splits as pairs and as ids, and the tokenizers."""

    splits: dict[str, list[Pair]]
    ids: dict[str, tuple[list[list[int]], list[list[int]]]]
    source_tokenizer: object
    target_tokenizer: object
    report: dict


def _side_length(split: str, subword: bool):
    if subword or split == "space":
        return lambda text: len(text.split())
    return len


def _corpus_name(data) -> str:
    if data.dataset == "tsv":
        return data.path
    if data.dataset == "parallel":
        return f"{data.source_path} + {data.target_path}"
    return f"data set {data.dataset}"


def _filtered(config: Config, pairs, name: str):
    """The pairs that pass the corpus filter, and its report (logged)."""
    subword = config.tokenizer.type == "sentencepiece"
    kept, filtered = filter_pairs(
        pairs,
        max_length=config.data.max_length,
        max_length_ratio=config.data.max_length_ratio,
        min_length=config.data.min_length,
        deduplicate=config.data.deduplicate,
        length_fn=_side_length(config.tokenizer.source_split, subword),
        target_length_fn=_side_length(config.tokenizer.target_split, subword),
    )
    log(f"{name}: {filtered.summary()}")
    if not kept:
        raise CorpusError(f"{name}: no usable pairs ({filtered.summary()})")
    return kept, filtered


def _named_split(data, split: str) -> tuple[list[str], list[Pair]] | None:
    """The dev or test split named in the config, as `(paths, pairs)`, or None."""
    tsv = getattr(data, f"{split}_path")
    paths = [tsv] if tsv else [getattr(data, f"{split}_source_path"), getattr(data, f"{split}_target_path")]
    if not all(paths):
        return None
    for path in paths:
        if not os.path.isfile(path):
            key = f"{split}_path" if tsv else f"{split}_{'source' if path == paths[0] else 'target'}_path"
            raise CorpusError(f"data.{key}: {path}: no such file")
    return paths, read_tsv(tsv) if tsv else read_parallel(*paths)


def _splits(config: Config, kept: list[Pair]) -> tuple[dict, dict]:
    """Train, dev and test: the named dev and test files as given (filtered like the corpus),
    the others split off the corpus. Returns the splits and, for the report, each named
    file's filter counts and how many of its pairs the training split holds too."""
    data = config.data
    named = {split: _named_split(data, split) for split in ("dev", "test")}
    splits = split_pairs(kept, 0 if named["dev"] else data.dev_size, 0 if named["test"] else data.test_size, data.seed)
    given = {}
    train_pairs = {(pair.source, pair.target) for pair in splits["train"]}
    for split, files in named.items():
        if files is None:
            continue
        paths, pairs = files
        what = " + ".join(paths)
        splits[split], filtered = _filtered(config, pairs, f"{split} {what}")
        overlap = sum((pair.source, pair.target) in train_pairs for pair in splits[split])
        if overlap:
            log(f"{split} {what}: {overlap} of its {len(splits[split])} pairs are in the training data too")
        given[f"{split}_file"] = {
            "paths": [os.path.abspath(path) for path in paths],
            "filter": dataclasses.asdict(filtered),
            "pairs_also_in_train": overlap,
        }
    return splits, given


def prepare_data(config: Config, run_dir: str) -> PreparedData:
    """Loads, filters, splits and tokenizes the corpus; writes splits and tokenizers.

    A run directory that already holds splits and tokenizers (a resumed run)
    reuses them.
    """
    data_dir = os.path.join(run_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    paths = {name: os.path.join(data_dir, f"{name}.tsv") for name in ("train", "dev", "test")}
    report_path = os.path.join(data_dir, "report.json")
    tokenizer_paths = tokenizer_files(run_dir, config.tokenizer)
    if all(os.path.exists(p) for p in list(paths.values()) + list(tokenizer_paths)):
        log(f"reusing the splits and tokenizers in {run_dir}")
        splits = {name: read_tsv(path) for name, path in paths.items()}
        source_tokenizer, target_tokenizer = load_tokenizers(run_dir, config.tokenizer)
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    else:
        kept, filtered = _filtered(config, load_pairs(config.data), _corpus_name(config.data))
        splits, given = _splits(config, kept)
        source_tokenizer, target_tokenizer = build_tokenizers(
            config.tokenizer,
            [p.source for p in splits["train"]],
            [p.target for p in splits["train"]],
        )
        save_tokenizers(run_dir, config.tokenizer, source_tokenizer, target_tokenizer)
        for name, path in paths.items():
            write_tsv(splits[name], path)
        report = {"filter": dataclasses.asdict(filtered), **given}
        report["splits"] = {name: len(split) for name, split in splits.items()}
        with atomic_write(report_path) as handle:
            json.dump(report, handle, indent=2)
    ids = {}
    too_long = 0
    for name, split in splits.items():
        sources = [source_tokenizer.encode(p.source) for p in split]
        targets = [target_tokenizer.encode(p.target) for p in split]
        if name == "train":
            # Subword lengths are only known now: drop over-long training pairs.
            limit = config.data.max_length
            keep = [i for i in range(len(sources)) if 0 < len(sources[i]) <= limit and 0 < len(targets[i]) <= limit]
            too_long = len(sources) - len(keep)
            sources = [sources[i] for i in keep]
            targets = [targets[i] for i in keep]
        ids[name] = (sources, targets)
    if too_long:
        log(f"train: {too_long} pairs over {config.data.max_length} tokens after tokenizing, removed")
    report["train_removed_after_tokenizing"] = too_long
    log(
        "splits: "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
        + f"; vocabulary source {source_tokenizer.vocabulary_size}, "
        f"target {target_tokenizer.vocabulary_size}"
    )
    return PreparedData(splits, ids, source_tokenizer, target_tokenizer, report)
