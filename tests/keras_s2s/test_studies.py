"""The studies on the tiny run: each writes its table, JSON and PNG, and its figures agree
with the run's own evaluation."""

from __future__ import annotations

import json
import math
import os

import pytest

from keras_s2s.studies.common import perplexity
from keras_s2s.studies.length import length_buckets


def _outputs(out_dir, name):
    for kind in ("json", "md", "png"):
        assert os.path.getsize(os.path.join(out_dir, f"{name}.{kind}")) > 100
    with open(os.path.join(out_dir, f"{name}.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out_dir, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_beam_study_matches_the_runs_evaluation(tiny_run, tmp_path):
    from keras_s2s.evaluation import evaluate
    from keras_s2s.studies.beam import beam_study

    run_dir, _ = tiny_run
    beam_study(run_dir, str(tmp_path), beams=(1, 2), ensemble=(run_dir,), split="dev")
    payload = _outputs(tmp_path, "beam")
    assert [(r["model"], r["beam"]) for r in payload["rows"]] == [
        ("single model", 1),
        ("single model", 2),
        ("ensemble of 2", 1),
        ("ensemble of 2", 2),
    ]
    expected = evaluate(run_dir, split="dev", beam_size=2, samples=0)
    single = payload["rows"][1]
    assert (single["per"], single["wer"]) == pytest.approx((expected["per"], expected["wer"]))
    # A model ensembled with itself is the same model.
    assert payload["rows"][3]["wer"] == pytest.approx(single["wer"])


def test_length_buckets_cover_every_length_once():
    lengths = [3, 4, 4, 5, 6, 7, 7, 8, 9, 12, 15, 15]
    ranges = length_buckets(lengths, 4)
    assert ranges[0][0] == 3 and ranges[-1][1] == 15
    assert all(low <= high for low, high in ranges)
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))


def test_length_study_scores_every_bucket(tiny_run, tmp_path):
    from keras_s2s.studies.length import length_study

    run_dir, _ = tiny_run
    length_study([run_dir, run_dir], str(tmp_path), labels=["a", "b"], split="test", beam_size=1, buckets=3)
    payload = _outputs(tmp_path, "length")
    a = [r for r in payload["rows"] if r["run"] == "a"]
    assert len(a) >= 2 and sum(r["words"] for r in a) == len(
        {line.split("\t")[0] for line in open(os.path.join(run_dir, "data", "test.tsv"), encoding="utf-8")}
    )
    assert [r["wer"] for r in a] == [r["wer"] for r in payload["rows"] if r["run"] == "b"]


def test_vector_study_projects_every_text(tiny_run, tmp_path):
    from keras_s2s.studies.vector import G2P_GROUPS, vector_study

    run_dir, _ = tiny_run
    vector_study(run_dir, str(tmp_path))
    payload = _outputs(tmp_path, "vector")
    assert len(payload["rows"]) == sum(map(len, G2P_GROUPS.values()))
    assert 0 < sum(payload["explained_variance"]) <= 1.0 + 1e-6


def test_perplexity_is_the_exponent_of_the_dev_loss(tiny_run):
    """Teacher-forced perplexity with the best weights against the best epoch's dev loss
    (Keras averages its loss per batch, this per token: close, not equal)."""
    run_dir, summary = tiny_run
    assert perplexity(run_dir, "dev") == pytest.approx(math.exp(summary["best_val_loss"]), rel=0.05)


def test_reversal_study_trains_both_variants_and_resumes(tmp_path, monkeypatch):
    import keras_s2s.decoder
    from keras_s2s.studies.variants import plan_runs, reversal_variants, variants_study

    settings = ["training.epochs=1", "data.limit=300"]
    # Two at a time: each run trains in its own `s2s train` process.
    variants_study(
        "reversal", "tiny", reversal_variants(), str(tmp_path), minutes=1, settings=settings, limit=20, jobs=2
    )
    assert all(
        os.path.getsize(f"{r.run_dir}.log") > 0
        for r in plan_runs("reversal", reversal_variants(), (1,), settings, str(tmp_path))
    )
    payload = _outputs(tmp_path, "reversal")
    assert [r["variant"] for r in payload["rows"]] == ["source as given", "reversed source"]
    assert all(r["perplexity"] > 1 and r["epochs"] == 1 for r in payload["rows"])
    configs = [json.load(open(os.path.join(r["run_dir"], "config.json"), encoding="utf-8")) for r in payload["rows"]]
    assert [c["model"]["reverse_source"] for c in configs] == [False, True]
    assert all(c["model"]["attention"] == "none" for c in configs)
    for row in payload["rows"]:
        assert len(row["dev_perplexity_by_epoch"]) == row["epochs"] and row["dev_perplexity_by_epoch"][0] > 1
    # Run again, in this process: the finished runs are neither retrained nor decoded again.
    stamps = [os.path.getmtime(os.path.join(r["run_dir"], "train_summary.json")) for r in payload["rows"]]

    def no_decoding(*args, **kwargs):
        raise AssertionError("a scored run was decoded again")

    monkeypatch.setattr(keras_s2s.decoder, "make_translator", no_decoding)
    variants_study("reversal", "tiny", reversal_variants(), str(tmp_path), minutes=1, settings=settings, limit=20)
    assert stamps == [os.path.getmtime(os.path.join(r["run_dir"], "train_summary.json")) for r in payload["rows"]]
    assert _outputs(tmp_path, "reversal")["rows"] == payload["rows"]
    # Another scoring (here: fewer inputs) decodes again.
    with pytest.raises(AssertionError, match="decoded again"):
        variants_study("reversal", "tiny", reversal_variants(), str(tmp_path), minutes=1, settings=settings, limit=10)
