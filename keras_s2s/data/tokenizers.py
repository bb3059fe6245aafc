"""Tokenizers: symbols (characters or phones) and SentencePiece subwords.

Every tokenizer uses the same special ids: pad 0, unk 1, bos 2, eos 3.
A tokenizer is saved into the run directory and reloaded from it with
`load_tokenizer`; the bundle carries the same files, so the device-side
translator reads them too.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence

from keras_s2s.config import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL_IDS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    TokenizerConfig,
)
from serving.files import atomic_write
from serving.tokenizers import SentencePieceVocabulary, SymbolVocabulary


class SymbolTokenizer(SymbolVocabulary):
    """Maps characters or space-separated symbols to ids; trains, saves and loads.

    Encoding and decoding are the device-side `serving.tokenizers.SymbolVocabulary`'s,
    so training and serving cannot disagree.

    Args:
        symbols: the vocabulary, without the special tokens.
        split: str. `char` (every character is a symbol, spaces included) or
            `space` (symbols are separated by whitespace).
        lowercase: bool. Lowercase text before encoding.
    """

    kind = "symbol"

    def __init__(self, symbols: Sequence[str], split: str = "char", lowercase: bool = False):
        if split not in ("char", "space"):
            raise ValueError(f"split: {split!r} is not one of char, space")
        symbols = list(SPECIAL_TOKENS) + [s for s in symbols if s not in SPECIAL_TOKENS]
        super().__init__(symbols, split, lowercase)

    @classmethod
    def train(cls, texts: Iterable[str], split: str = "char", lowercase: bool = False):
        """Collects every symbol of `texts`, sorted, as the vocabulary."""
        found = set()
        for text in texts:
            found.update(cls._pieces(text.lower() if lowercase else text, split))
        return cls(sorted(found), split, lowercase)

    @staticmethod
    def _pieces(text: str, split: str) -> list[str]:
        return list(text) if split == "char" else text.split()

    def save(self, path: str) -> None:
        data = {
            "type": "symbol",
            "split": self.split,
            "lowercase": self.lowercase,
            "symbols": self.symbols,
        }
        _write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str) -> SymbolTokenizer:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("type") != "symbol" or data["symbols"][:NUM_SPECIAL_IDS] != list(SPECIAL_TOKENS):
            raise ValueError(f"{path}: not a symbol tokenizer of this format")
        return cls(data["symbols"][NUM_SPECIAL_IDS:], data["split"], data.get("lowercase", False))


class SentencePieceTokenizer(SentencePieceVocabulary):
    """A SentencePiece model (unigram or BPE) with pad 0, unk 1, bos 2, eos 3.

    Encoding and decoding are the device-side `SentencePieceVocabulary`'s.

    Args:
        model_proto: bytes. The serialized SentencePiece model.
        lowercase: bool. Lowercase text before encoding.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, lowercase: bool = False):
        super().__init__(lowercase=lowercase, model_proto=model_proto)
        self.model_proto = model_proto
        expected = {PAD_ID: "pad", UNK_ID: "unk", BOS_ID: "bos", EOS_ID: "eos"}
        actual = {
            self.processor.pad_id(): "pad",
            self.processor.unk_id(): "unk",
            self.processor.bos_id(): "bos",
            self.processor.eos_id(): "eos",
        }
        if actual != expected:
            raise ValueError("SentencePiece model: special ids must be pad 0, unk 1, bos 2, eos 3")

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocabulary_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        lowercase: bool = False,
        seed_sentences: int = 2_000_000,
    ) -> SentencePieceTokenizer:
        """Trains a model in memory on `texts`."""
        import sentencepiece as spm

        texts = [t.lower() if lowercase else t for t in texts if t]
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            input_sentence_size=seed_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(model.getvalue(), lowercase)

    def save(self, path: str) -> None:
        _write_atomic(path, self.model_proto)
        _write_atomic(
            path + ".json",
            json.dumps({"type": "sentencepiece", "lowercase": self.lowercase}).encode(),
        )

    @classmethod
    def load(cls, path: str) -> SentencePieceTokenizer:
        with open(path, "rb") as handle:
            proto = handle.read()
        lowercase = False
        if os.path.exists(path + ".json"):
            with open(path + ".json", encoding="utf-8") as handle:
                lowercase = json.load(handle).get("lowercase", False)
        return cls(proto, lowercase)


def _write_atomic(path: str, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def tokenizer_files(run_dir: str, config: TokenizerConfig) -> tuple[str, str]:
    """Paths of the source and target tokenizer files inside a run directory."""
    if config.type == "symbol":
        return (
            os.path.join(run_dir, "source_tokenizer.json"),
            os.path.join(run_dir, "target_tokenizer.json"),
        )
    if config.joint:
        joint = os.path.join(run_dir, "joint.spm.model")
        return joint, joint
    return os.path.join(run_dir, "source.spm.model"), os.path.join(run_dir, "target.spm.model")


def build_tokenizers(config: TokenizerConfig, sources: list[str], targets: list[str]):
    """Trains the source and target tokenizers that `config` describes."""
    if config.type == "symbol":
        return (
            SymbolTokenizer.train(sources, config.source_split, config.lowercase),
            SymbolTokenizer.train(targets, config.target_split),
        )
    options = dict(model_type=config.model_type, character_coverage=config.character_coverage)
    if config.joint:
        joint = SentencePieceTokenizer.train(sources + targets, config.vocabulary_size, **options)
        return joint, joint
    return (
        SentencePieceTokenizer.train(sources, config.vocabulary_size, lowercase=config.lowercase, **options),
        SentencePieceTokenizer.train(targets, config.vocabulary_size, **options),
    )


def save_tokenizers(run_dir: str, config: TokenizerConfig, source, target) -> None:
    source_path, target_path = tokenizer_files(run_dir, config)
    source.save(source_path)
    if target_path != source_path:
        target.save(target_path)


def load_tokenizer(path: str):
    """Loads a tokenizer file written by `save`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    if path.endswith(".json"):
        return SymbolTokenizer.load(path)
    return SentencePieceTokenizer.load(path)


def load_tokenizers(run_dir: str, config: TokenizerConfig):
    source_path, target_path = tokenizer_files(run_dir, config)
    source = load_tokenizer(source_path)
    target = source if target_path == source_path else load_tokenizer(target_path)
    return source, target
