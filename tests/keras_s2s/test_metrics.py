import pytest

from keras_s2s.data.readers import Pair
from keras_s2s.scores import bleu_scores, edit_distance, g2p_scores, inputs_to_decode, score_outputs


def test_edit_distance():
    assert edit_distance("kitten".split(), "kitten".split()) == 0
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance([], ["A"]) == 1


def test_any_reference_pronunciation_counts():
    values = g2p_scores(
        ["T AH M EY T OW", "K AE T", "D AO G Z"],
        [["T AH M EY T OW", "T AH M AA T OW"], ["K AE T"], ["D AO G"]],
    )
    assert values["wer"] == pytest.approx(100 / 3)
    assert values["per"] == pytest.approx(100 * 1 / (6 + 3 + 3))
    values = g2p_scores(["T AH M AA T OW"], [["T AH M EY T OW", "T AH M AA T OW"]])
    assert values["wer"] == 0 and values["per"] == 0


def test_g2p_scoring_decodes_each_word_once_against_all_its_references():
    pairs = [Pair("tomato", "T AH M EY T OW"), Pair("cat", "K AE T"), Pair("tomato", "T AH M AA T OW")]
    assert inputs_to_decode("g2p", pairs) == ["tomato", "cat"]
    values = score_outputs("g2p", pairs, ["T AH M AA T OW", "K AA T"])
    assert values["wer"] == pytest.approx(50.0) and values["words"] == 2
    assert inputs_to_decode("bleu", pairs) == ["tomato", "cat", "tomato"]


def test_bleu_and_chrf_with_signatures():
    perfect = bleu_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0)
    assert perfect["chrf"] == pytest.approx(100.0)
    assert "nrefs:1" in perfect["bleu_signature"]
    worse = bleu_scores(["a dog stood on the mat"], ["the cat sat on the mat"])
    assert worse["bleu"] < 50 and worse["chrf"] < perfect["chrf"]
