import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_s2s.config import TokenizerConfig
from keras_s2s.data.tokenizers import (
    SentencePieceTokenizer,
    SymbolTokenizer,
    build_tokenizers,
    load_tokenizers,
    save_tokenizers,
)


def test_symbol_tokenizer_ids_and_round_trip(tmp_path):
    tokenizer = SymbolTokenizer.train(["K AE T", "D AO G"], split="space")
    assert tokenizer.symbols[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tokenizer.encode("K AE T ZZ")
    assert min(ids[:3]) >= 4 and ids[3] == 1  # unknown symbol -> unk
    assert tokenizer.decode(tokenizer.encode("D AO G")) == "D AO G"
    path = str(tmp_path / "t.json")
    tokenizer.save(path)
    again = SymbolTokenizer.load(path)
    assert again.encode("K AE T") == tokenizer.encode("K AE T")
    assert again.vocabulary_size == tokenizer.vocabulary_size == 4 + 6


def test_char_tokenizer_lowercases_when_asked():
    tokenizer = SymbolTokenizer.train(["Cat"], split="char", lowercase=True)
    assert tokenizer.decode(tokenizer.encode("CAT")) == "cat"


SENTENCES = [
    "En el principio crió Dios los cielos y la tierra.",
    "Y la tierra estaba desordenada y vacía.",
    "Y dijo Dios: Sea la luz: y fué la luz.",
    "Y vió Dios que la luz era buena.",
] * 30


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_special_ids_and_save_load(tmp_path, model_type):
    tokenizer = SentencePieceTokenizer.train(SENTENCES, vocabulary_size=60, model_type=model_type)
    processor = tokenizer.processor
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (0, 1, 2, 3)
    ids = tokenizer.encode("Y dijo Dios")
    assert all(i >= 4 for i in ids)
    assert tokenizer.decode(ids) == "Y dijo Dios"
    path = str(tmp_path / "s.spm.model")
    tokenizer.save(path)
    assert SentencePieceTokenizer.load(path).encode("la tierra") == tokenizer.encode("la tierra")


def test_joint_and_separate_files_reload(tmp_path):
    for joint in (True, False):
        config = TokenizerConfig(type="sentencepiece", vocabulary_size=60, joint=joint)
        run = tmp_path / f"joint{joint}"
        run.mkdir()
        source, target = build_tokenizers(config, SENTENCES, [s.upper() for s in SENTENCES])
        assert (source is target) == joint
        save_tokenizers(str(run), config, source, target)
        again_source, again_target = load_tokenizers(str(run), config)
        assert again_target.encode("LA LUZ") == target.encode("LA LUZ")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(list("abcdefghij")), min_size=0, max_size=30))
def test_symbol_round_trip_property(letters):
    tokenizer = SymbolTokenizer.train(["abcdefghij"], split="char")
    word = "".join(letters)
    assert tokenizer.decode(tokenizer.encode(word)) == word
    assert len(tokenizer.encode(word)) == len(word)
