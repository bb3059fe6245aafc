import csv
import io
import json
import os
import random
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from keras_s2s.attention import attention_maps, plot_attention
from keras_s2s.cli import main
from keras_s2s.config import Config
from keras_s2s.data.readers import read_tsv
from keras_s2s.data.tokenizers import load_tokenizers
from keras_s2s.decoder import KerasTranslator, load_run
from keras_s2s.training import (
    FitScheduleToBudget,
    PaperSchedule,
    PlannedCosineDecay,
    TimeBudget,
    learning_rate_schedule,
    train,
)


def _toy_corpus(path, count, task, length=None, seed=0):
    rng = random.Random(seed)
    seen = set()
    with open(path, "w", encoding="utf-8") as handle:
        while len(seen) < count:
            size = length or rng.randint(2, 7)
            word = "".join(rng.choice("abcdefgh") for _ in range(size))
            if word in seen:
                continue
            seen.add(word)
            handle.write(f"{word}\t{word if task == 'copy' else word[::-1]}\n")


def _toy_config(path, *extra):
    return Config().override(
        [
            "data.dataset=tsv",
            f"data.path={path}",
            "data.max_length_ratio=10",
            "tokenizer.target_split=char",
            "model.num_layers=1",
            "model.hidden_dim=64",
            "model.embedding_dim=32",
            "model.dropout=0",
            "training.learning_rate=0.01",
            "training.token_budget=512",
            "training.max_batch_size=64",
            "training.eval_sample_size=0",
            "decode.metric=bleu",
            *extra,
        ]
    )


def test_tiny_model_on_real_cmudict_reduces_loss(tiny_run):
    run_dir, summary = tiny_run
    with open(os.path.join(run_dir, "train_log.csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert "val_per" in rows[0] and "val_wer" in rows[0]
    for name in [
        "config.json",
        "source_tokenizer.json",
        "target_tokenizer.json",
        "checkpoints/best.weights.h5",
        "checkpoints/last.weights.h5",
        "data/train.tsv",
        "data/dev.tsv",
        "data/test.tsv",
        "padding.json",
        "training_curves.png",
        "train_summary.json",
    ]:
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert os.path.isdir(os.path.join(run_dir, "tensorboard"))
    assert not os.path.exists(os.path.join(run_dir, "backup"))  # removed after a full run
    config = Config.load(os.path.join(run_dir, "config.json"))
    assert config.model.source_vocabulary_size > 20


def test_the_last_epochs_are_kept_and_averaged(tiny_run, capsys):
    run_dir, _ = tiny_run  # trained 3 epochs with training.average_last_epochs=2
    checkpoints = os.path.join(run_dir, "checkpoints")
    kept = sorted(name for name in os.listdir(checkpoints) if name.startswith("epoch_"))
    assert kept == ["epoch_0002.weights.h5", "epoch_0003.weights.h5"]
    weights = {}
    for name in ("epoch_0002", "epoch_0003", "averaged", "last"):
        model = load_run(run_dir, checkpoint="best")[1]
        model.load_weights(os.path.join(checkpoints, f"{name}.weights.h5"))
        weights[name] = model.get_weights()
    for second, third, averaged, last in zip(*weights.values()):
        np.testing.assert_allclose(averaged, (second + third) / 2, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(third, last)
    assert any(not np.array_equal(a, b) for a, b in zip(weights["averaged"], weights["last"]))
    assert (
        main(["evaluate", run_dir, "--split", "dev", "--beam", "1", "--samples", "0", "--checkpoint", "averaged"]) == 0
    )
    scores = json.load(open(os.path.join(run_dir, "eval", "dev.averaged.beam1.json")))
    assert scores["checkpoint"] == "averaged" and 0 <= scores["wer"] <= 100


def test_learns_to_reverse_toy_sequences_perfectly(tmp_path):
    path = tmp_path / "reverse.tsv"
    _toy_corpus(path, 2000, "reverse")
    config = _toy_config(
        path,
        "model.attention=luong",
        "training.epochs=15",
        "model.hidden_dim=128",
        "training.learning_rate=0.005",
        "data.dev_size=50",
        "data.test_size=100",
    )
    summary = train(config, str(tmp_path / "run"), verbose=0)
    run_config = Config.load(tmp_path / "run" / "config.json")
    translator = KerasTranslator(
        summary["model"], run_config, *load_tokenizers(str(tmp_path / "run"), run_config.tokenizer)
    )
    pairs = read_tsv(str(tmp_path / "run" / "data" / "test.tsv"))
    outputs = translator.translate_best([p.source for p in pairs], beam_size=1)
    assert outputs == [p.target for p in pairs]
    beam_outputs = translator.translate_best([p.source for p in pairs], beam_size=4)
    assert beam_outputs == outputs
    # Its attention maps: output token t of a reversed word looks at source letter n - 1 - t,
    # in reading order (the model reads the source reversed; the map puts it back).
    words = [p.source for p in pairs[:20]]
    maps = attention_maps(str(tmp_path / "run"), words, beam_size=1)
    aligned = 0
    for word, (source, output, weights) in zip(words, maps):
        assert source == list(word) and output == list(word[::-1]) + ["</s>"]
        assert weights.shape == (len(word) + 1, len(word))
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        aligned += sum(int(np.argmax(weights[t]) == len(word) - 1 - t) for t in range(len(word)))
    assert aligned >= 0.9 * sum(len(w) for w in words)
    path = plot_attention(maps[:4], words[:4], str(tmp_path / "attention.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_mirrored_strategy_on_two_cpus_matches_one_device(tmp_path, two_cpu_strategy):
    assert len(tf.config.list_logical_devices("CPU")) >= 2
    path = tmp_path / "copy.tsv"
    _toy_corpus(path, 288, "copy", length=5)
    config = _toy_config(
        path,
        "training.epochs=2",
        "data.dev_size=16",
        "data.test_size=16",
        "training.max_batch_size=32",
        "model.num_layers=2",
        "model.hidden_dim=16",
    )
    single = train(config, str(tmp_path / "single"), verbose=0, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = train(config, str(tmp_path / "mirrored"), verbose=0, strategy=two_cpu_strategy)
    assert mirrored["epochs_run"] == single["epochs_run"] == 2
    for a, b in zip(single["model"].weights, mirrored["model"].weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=2e-5, err_msg=a.path
        )
    first = keras.ops.convert_to_numpy(single["model"].weights[0])
    assert not np.allclose(first, 0)


def test_time_budget_stops_training(tmp_path):
    config = tiny_config(**{"training.epochs": 50, "training.eval_sample_size": 0})
    summary = train(config, str(tmp_path / "run"), max_minutes=0.001, verbose=0)
    assert summary["stopped_by_time_budget"] and summary["epochs_run"] == 1


@pytest.mark.parametrize("fit,mirrored", [(True, False), (False, False), (True, True)])
def test_a_time_budget_ends_the_cosine_decay_where_it_stops_training(tmp_path, capsys, two_cpu_strategy, fit, mirrored):
    config = tiny_config(
        **{
            "training.epochs": 50,
            "training.eval_sample_size": 0,
            "training.learning_rate": 0.01,
            "training.learning_rate_schedule": "cosine",
            "training.final_learning_rate_ratio": 0.1,
            "training.fit_schedule_to_budget": fit,
        }
    )
    # Under the mirrored strategy the tiny batches split unevenly over the replicas.
    strategy = two_cpu_strategy if mirrored else None
    summary = train(config, str(tmp_path / "run"), max_minutes=0.001, verbose=0, strategy=strategy)
    assert summary["stopped_by_time_budget"] and summary["epochs_run"] == 1
    rate = float(keras.ops.convert_to_numpy(summary["model"].optimizer.learning_rate))
    if fit:
        # Over budget after the first epoch: the decay ends at the step reached.
        assert rate == pytest.approx(0.001, rel=1e-4)
        assert "learning-rate decay now ends at step" in capsys.readouterr().err
    else:
        assert rate > 0.0099


def _fake_budget(seconds, start=0.0):
    budget = TimeBudget(seconds / 60)
    budget.start = start
    return budget


class _FakeModel:
    def __init__(self):
        self.optimizer = type("Optimizer", (), {"iterations": 0})()


def test_the_budget_plan_follows_the_last_epoch_pace_and_never_exceeds_the_epochs():
    schedule = PlannedCosineDecay(0.001, decay_steps=990, alpha=0.1, warmup_target=0.01, warmup_steps=10)
    reference = keras.optimizers.schedules.CosineDecay(0.001, 990, alpha=0.1, warmup_target=0.01, warmup_steps=10)
    for step in (0, 5, 10, 400, 999, 1000, 1500):
        assert float(schedule(step)) == pytest.approx(float(reference(step)), rel=1e-6)
    now = [0.0]
    callback = FitScheduleToBudget(schedule, _fake_budget(100), clock=lambda: now[0])
    model = _FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    # 100 steps in 20 s: 80 s left at 5 steps/s.
    now[0], model.optimizer.iterations = 20.0, 100
    callback.on_epoch_end(0)
    assert schedule.planned_total_steps == 500
    assert float(schedule(500)) == pytest.approx(0.001, rel=1e-5)
    assert float(schedule(250)) > 0.001
    # The next epoch goes at 10 steps/s: 70 s left.
    now[0], model.optimizer.iterations = 30.0, 200
    callback.on_epoch_end(1)
    assert schedule.planned_total_steps == 900
    # Faster still: the plan stops at the configured steps.
    now[0], model.optimizer.iterations = 31.0, 300
    callback.on_epoch_end(2)
    assert schedule.planned_total_steps == 1000
    assert float(schedule(1000)) == pytest.approx(float(reference(1000)), rel=1e-6)


def test_paper_schedule_halves_every_half_epoch_after_epoch_five():
    schedule = PaperSchedule(0.7, steps_per_epoch=100, decay_start=5.0, decay_every=0.5)
    rates = [float(schedule(step)) for step in (0, 499, 500, 549, 550, 600, 750)]
    assert rates == pytest.approx([0.7, 0.7, 0.7, 0.7, 0.35, 0.175, 0.021875])


def test_cosine_schedule_warms_up_then_decays_to_the_final_ratio():
    config = Config.from_dict(
        {
            "training": {
                "epochs": 4,
                "learning_rate": 0.002,
                "learning_rate_schedule": "cosine",
                "warmup_steps": 10,
                "final_learning_rate_ratio": 0.05,
            }
        }
    )
    schedule = learning_rate_schedule(config, steps_per_epoch=25)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 200)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] == pytest.approx(0.002)
    assert rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0.002 * 0.05, rel=1e-4)
    assert rates[5] == pytest.approx(0.002 * 0.05, rel=1e-4)


def test_cosine_schedule_conflicts_with_plateau_halving():
    with pytest.raises(ValueError, match="training.reduce_lr_patience"):
        Config.from_dict({"training": {"learning_rate_schedule": "cosine", "reduce_lr_patience": 1}})
    with pytest.raises(ValueError, match="training.learning_rate_schedule"):
        Config.from_dict({"training": {"learning_rate_schedule": "cosine", "optimizer": "paper_sgd"}})


def test_evaluate_prints_per_and_wer(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["evaluate", run_dir, "--split", "test", "--beam", "2", "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "PER" in printed and "WER" in printed
    scores = json.load(open(os.path.join(run_dir, "eval", "test.beam2.json")))
    assert 0 <= scores["per"] <= 100 and scores["words"] == 40
    hypotheses = open(os.path.join(run_dir, "eval", "test.beam2.hyp"), encoding="utf-8").read()
    assert len(hypotheses.splitlines()) == 40


def test_evaluate_the_last_checkpoint(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["evaluate", run_dir, "--split", "dev", "--beam", "2", "--samples", "0", "--checkpoint", "last"]) == 0
    scores = json.load(open(os.path.join(run_dir, "eval", "dev.last.beam2.json")))
    assert scores["checkpoint"] == "last" and 0 <= scores["wer"] <= 100


def test_evaluate_with_another_length_penalty_writes_its_own_files(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert (
        main(["evaluate", run_dir, "--split", "dev", "--beam", "2", "--samples", "0", "--length-penalty", "0.5"]) == 0
    )
    assert "length_penalty=0.5" in capsys.readouterr().out
    scores = json.load(open(os.path.join(run_dir, "eval", "dev.beam2.lp0.5.json")))
    assert scores["length_penalty"] == 0.5 and scores["beam_size"] == 2


def test_evaluate_an_ensemble_of_runs(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    # A run with itself: the mean of two equal log-probabilities is the run alone.
    assert main(["evaluate", run_dir, "--split", "dev", "--beam", "2", "--samples", "0"]) == 0
    assert main(["evaluate", run_dir, "--split", "dev", "--beam", "2", "--samples", "0", "--ensemble", run_dir]) == 0
    eval_dir = os.path.join(run_dir, "eval")
    scores = json.load(open(os.path.join(eval_dir, "dev.beam2.ensemble2.json")))
    assert scores["ensemble"] == [os.path.abspath(run_dir)] * 2
    alone = open(os.path.join(eval_dir, "dev.beam2.hyp"), encoding="utf-8").read()
    assert open(os.path.join(eval_dir, "dev.beam2.ensemble2.hyp"), encoding="utf-8").read() == alone
    # A run with other tokenizers is refused, naming its files.
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    vocabulary = json.loads((other / "target_tokenizer.json").read_text(encoding="utf-8"))
    vocabulary["symbols"][-1] = "XX"
    (other / "target_tokenizer.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--split", "dev", "--beam", "2", "--samples", "0", "--ensemble", str(other)]) == 2
    error = capsys.readouterr().err
    assert f"{other}: its tokenizers" in error and "target_tokenizer.json" in error


def test_attention_maps_need_an_attention_model(tiny_run, capsys):
    run_dir, _ = tiny_run  # the tiny preset has no attention
    assert main(["attention", run_dir, "hello"]) == 2
    assert "attention maps need 'luong'" in capsys.readouterr().err


def test_translate_keeps_one_line_per_input_line(tiny_run, monkeypatch, capsys):
    run_dir, _ = tiny_run
    lines = ["hello", "", "   ", "world", "x" * 300, "naïve", "hello"]
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join(lines) + "\n").encode("utf-8") + b"bad\xffbyte\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["decode", run_dir, "--beam", "2"]) == 0
    output = capsys.readouterr().out.split("\n")
    assert output[-1] == "" and len(output) - 1 == len(lines) + 1
    assert output[1] == "" and output[2] == ""
    assert output[0] == output[6] and output[0] != ""


def test_training_written_to_a_file_logs_one_line_per_epoch(tmp_path, capsys):
    path = tmp_path / "copy.tsv"
    _toy_corpus(path, 300, "copy")
    args = [
        "train",
        "--config",
        "tiny",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "data.dataset=tsv",
        "--set",
        f"data.path={path}",
        "--set",
        "tokenizer.target_split=char",
        "--set",
        "training.epochs=2",
        "--set",
        "training.eval_sample_size=0",
        "--set",
        "decode.metric=bleu",
    ]
    assert main(args) == 0  # pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if " - loss: " in line]
    assert len(epoch_lines) == 2
    assert "\r" not in out and "\u2501" not in out  # no redrawn progress bar


def test_bad_corpus_line_is_reported_by_file_and_line(tmp_path, capsys):
    path = tmp_path / "mine.tsv"
    path.write_text("cat\tK AE T\ndog D AO G\n", encoding="utf-8")
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "data.dataset=tsv",
            "--set",
            f"data.path={path}",
        ]
    )
    assert code == 2
    assert "mine.tsv:2: no tab" in capsys.readouterr().err


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("model.num_layers=0", "model.num_layers"),
        ("model.attention=bahdanau", "model.attention"),
        ("model.hidden_dim=-8", "model.hidden_dim"),
        ("model.hidden_dim=big", "model.hidden_dim"),
        ("model.target_vocabulary_size=3", "model.target_vocabulary_size"),
        ("tokenizer.vocabulary_size=2", "tokenizer.vocabulary_size"),
        ("training.epochs=0", "training.epochs"),
        ("training.colour=blue", "training.colour"),
    ],
)
def test_bad_config_value_fails_before_training(tmp_path, capsys, assignment, key):
    code = main(["train", "--config", "tiny", "--run-dir", str(tmp_path / "run"), "--set", assignment])
    assert code == 2
    assert key in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_empty_corpus_fails_before_training_and_names_the_file(tmp_path, capsys):
    path = tmp_path / "empty.tsv"
    path.write_bytes(b"")
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "data.dataset=tsv",
            "--set",
            f"data.path={path}",
        ]
    )
    assert code == 2
    assert f"{path}: no usable pairs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_missing_corpus_file_is_named(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "data.dataset=parallel",
            "--set",
            "data.source_path=nothere.es",
            "--set",
            f"data.target_path={tmp_path}/nothere.en",
        ]
    )
    assert code == 2
    assert "nothere.es: no such file" in capsys.readouterr().err


def test_load_run_restores_the_trained_weights(tiny_run):
    run_dir, summary = tiny_run
    _, model, _, _ = load_run(run_dir, checkpoint="last")
    for a, b in zip(model.weights, summary["model"].weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_mixed_precision_trains_and_restores_the_policy(tmp_path):
    config = tiny_config(
        **{
            "training.epochs": 1,
            "training.mixed_precision": "bfloat16",
            "model.attention": "luong",
            "training.eval_sample_size": 5,
        }
    )
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert summary["model"].get_layer("decoder_lstm_0").compute_dtype == "bfloat16"
    assert summary["model"].get_layer("decoder_logits").compute_dtype == "float32"
    assert np.isfinite(summary["final_val_loss"])
    assert keras.mixed_precision.global_policy().name == "float32"


class _Crash(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    config = tiny_config(**{"training.epochs": 3, "training.eval_sample_size": 0})
    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir, verbose=0, callbacks=[_Crash()])
    assert os.path.isdir(os.path.join(run_dir, "backup"))
    summary = train(config, run_dir, verbose=0)
    assert summary["epochs_run"] == 1  # only the third epoch was left
    with open(os.path.join(run_dir, "train_log.csv"), encoding="utf-8") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def test_named_dev_and_test_files_are_the_runs_splits_as_given(tmp_path):
    """The test split as a TSV file, the dev split as two line-aligned files."""
    corpus, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    dev_source, dev_target = tmp_path / "dev.src", tmp_path / "dev.tgt"
    _toy_corpus(corpus, 120, "reverse", seed=1)
    dev_source.write_text("abc\nbadge\n", encoding="utf-8")
    dev_target.write_text("cba\negdab\n", encoding="utf-8")
    train_line = corpus.read_text(encoding="utf-8").splitlines()[5]
    test.write_text(f"hag\tgah\n{train_line}\n\n", encoding="utf-8")  # one pair of the training file, one blank
    config = _toy_config(
        corpus,
        f"data.dev_source_path={dev_source}",
        f"data.dev_target_path={dev_target}",
        f"data.test_path={test}",
        "training.epochs=1",
    )
    run_dir = tmp_path / "run"
    train(config, str(run_dir), verbose=0)
    splits = {name: read_tsv(str(run_dir / "data" / f"{name}.tsv")) for name in ("train", "dev", "test")}
    assert [(p.source, p.target) for p in splits["dev"]] == [("abc", "cba"), ("badge", "egdab")]
    assert [(p.source, p.target) for p in splits["test"]] == [("hag", "gah"), tuple(train_line.split("\t"))]
    assert len(splits["train"]) == 120  # the whole training file: no dev or test split taken off it
    with open(run_dir / "data" / "report.json", encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["test_file"]["pairs_also_in_train"] == 1 and report["test_file"]["filter"]["empty"] == 1
    assert report["dev_file"]["pairs_also_in_train"] == 0 and report["splits"] == {"train": 120, "dev": 2, "test": 2}
    assert report["dev_file"]["paths"] == [str(dev_source), str(dev_target)]
    assert report["test_file"]["paths"] == [str(test)]


def test_a_missing_named_split_file_is_refused_with_its_name(tmp_path):
    from keras_s2s.data.readers import CorpusError

    corpus = tmp_path / "train.tsv"
    _toy_corpus(corpus, 40, "copy")
    config = _toy_config(corpus, f"data.test_path={tmp_path / 'nowhere.tsv'}")
    with pytest.raises(CorpusError, match="data.test_path: .*nowhere.tsv: no such file"):
        train(config, str(tmp_path / "run"), verbose=0)
    config = _toy_config(corpus, f"data.dev_source_path={corpus}", f"data.dev_target_path={tmp_path / 'no.tgt'}")
    with pytest.raises(CorpusError, match="data.dev_target_path: .*no.tgt: no such file"):
        train(config, str(tmp_path / "run2"), verbose=0)
    with pytest.raises(ValueError, match="data.dev_source_path, data.dev_target_path: give both"):
        _toy_config(corpus, f"data.dev_source_path={corpus}").validate()
    with pytest.raises(ValueError, match="name the test split once"):
        _toy_config(corpus, f"data.test_path={corpus}", f"data.test_source_path={corpus}").validate()


def test_evaluating_named_files_and_scoring_a_hypothesis_file_match_the_runs_evaluation(tiny_run, tmp_path, capsys):
    from keras_s2s.evaluation import evaluate
    from keras_s2s.scores import score_files

    run_dir, _ = tiny_run
    own = evaluate(run_dir, split="test", beam_size=2, samples=0, out=io.StringIO())
    pairs = read_tsv(os.path.join(run_dir, "data", "test.tsv"))
    source, reference = tmp_path / "words.txt", tmp_path / "prons.txt"
    source.write_text("".join(p.source + "\n" for p in pairs), encoding="utf-8")
    reference.write_text("".join(p.target + "\n" for p in pairs), encoding="utf-8")
    named = evaluate(run_dir, beam_size=2, samples=0, out=io.StringIO(), source=str(source), reference=str(reference))
    assert (named["per"], named["wer"], named["words"]) == (own["per"], own["wer"], own["words"])
    # One hypothesis per input line, as s2s-translate writes them, scored on the device side.
    with open(os.path.join(run_dir, "eval", "test.beam2.hyp"), encoding="utf-8") as handle:
        best = dict(zip(dict.fromkeys(p.source for p in pairs), handle.read().splitlines()))
    hypotheses = tmp_path / "hyp.txt"
    hypotheses.write_text("".join(best[p.source] + "\n" for p in pairs), encoding="utf-8")
    scored = score_files(str(hypotheses), str(reference), "g2p", source=str(source))
    assert (scored["per"], scored["wer"]) == (own["per"], own["wer"])
    assert main(["score", str(hypotheses), str(reference), "--metric", "g2p", "--source", str(source)]) == 0
    assert f"PER {own['per']:.2f}%" in capsys.readouterr().out
    reference.write_text("only one line\n", encoding="utf-8")
    assert main(["score", str(hypotheses), str(reference)]) == 2
    assert "must be line-aligned" in capsys.readouterr().err


def test_the_old_name_of_decode_still_works_and_says_so(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello\n")))
    assert main(["translate", tiny_run[0], "--beam", "1"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and "deprecated, use `s2s decode`" in captured.err


@pytest.mark.parametrize("command", ["s2s", "s2s-export", "s2s-translate"])
def test_every_command_prints_the_one_version(command, capsys):
    import importlib

    from serving import __version__

    module = {"s2s": "keras_s2s.cli", "s2s-export": "export.cli", "s2s-translate": "serving.cli"}[command]
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"{command} {__version__}\n"
