"""Device-side tokenizers: read the files a run directory or bundle holds.

Symbol tokenizers are JSON (`{"type": "symbol", "split", "lowercase",
"symbols"}`); subword tokenizers are SentencePiece models (`*.spm.model`,
with an optional `*.spm.model.json` saying whether to lowercase). Special ids
are pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

NUM_SPECIAL_IDS = 4
UNK_ID = 1
# onnxruntime's C API (and so onnxruntime-node, -web, Java, C#) takes strings NUL-terminated:
# a caller of `translator.text.onnx` replaces NUL with U+FFFF, a noncharacter that is
# unknown to every tokenizer, as NUL is, so the output stays the tokenizer's.
NUL_STAND_IN = "\uffff"


class SymbolVocabulary:
    """Characters or space-separated symbols <-> ids."""

    def __init__(self, symbols: list[str], split: str, lowercase: bool = False):
        self.symbols = symbols
        self.split = split
        self.lowercase = lowercase
        self.ids = {symbol: index for index, symbol in enumerate(symbols)}

    @property
    def vocabulary_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        pieces = list(text) if self.split == "char" else text.split()
        return [self.ids.get(piece, UNK_ID) for piece in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self.symbols[i] for i in ids if NUM_SPECIAL_IDS <= i < len(self.symbols)]
        return ("" if self.split == "char" else " ").join(pieces)


class SentencePieceVocabulary:
    """A SentencePiece model, from a file or from its serialized bytes."""

    def __init__(self, path: str | None = None, lowercase: bool = False, model_proto: bytes | None = None):
        import sentencepiece as spm

        if model_proto is not None:
            self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        else:
            self.processor = spm.SentencePieceProcessor(model_file=path)
        self.lowercase = lowercase

    @property
    def vocabulary_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text.lower() if self.lowercase else text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.processor.decode([int(i) for i in ids if i >= NUM_SPECIAL_IDS])


def load_vocabulary(path: str):
    """Loads a tokenizer file; raises `ValueError` naming the file when it is unusable."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: tokenizer file is missing")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            return SymbolVocabulary(data["symbols"], data["split"], data.get("lowercase", False))
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: not a symbol tokenizer file ({error})") from None
    lowercase = False
    if os.path.exists(path + ".json"):
        with open(path + ".json", encoding="utf-8") as handle:
            lowercase = json.load(handle).get("lowercase", False)
    try:
        return SentencePieceVocabulary(path, lowercase)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{path}: not a SentencePiece model ({error})") from None
