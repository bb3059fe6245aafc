"""Decoding with the Keras inference models, and the scores.

`KerasTranslator` runs the encoder and one-step decoder models under the
same numpy search (`serving/search.py`) that the onnxruntime translator
uses. Scores: sacrebleu BLEU and chrF for text; phoneme and word error
rates for grapheme-to-phoneme, where any reference pronunciation counts.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from keras_s2s.config import BOS_ID, EOS_ID, Config
from serving.search import Hypothesis, decode_in_batches


# --- Scores -----------------------------------------------------------------


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences."""
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, start=1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)
            )
        previous = current
    return previous[-1]


def g2p_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Phoneme error rate and word error rate, in percent.

    A word is right when its hypothesis equals any of its references; its
    phoneme errors are counted against the closest reference (and that
    reference's length is the denominator).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    errors = length = wrong = 0
    for hypothesis, options in zip(hypotheses, references):
        hyp = hypothesis.split()
        best = min(
            ((edit_distance(hyp, ref.split()), len(ref.split())) for ref in options),
            key=lambda pair: (pair[0] / max(pair[1], 1), pair[0]),
        )
        errors += best[0]
        length += best[1]
        wrong += best[0] > 0
    return {
        "per": 100.0 * errors / max(length, 1),
        "wer": 100.0 * wrong / max(len(hypotheses), 1),
        "words": len(hypotheses),
    }


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU and chrF from sacrebleu, with their signatures."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hypotheses),
    }


def metric_kind(config: Config) -> str:
    """`g2p` or `bleu`, resolving `decode.metric: auto`."""
    if config.decode.metric != "auto":
        return config.decode.metric
    if config.data.dataset == "cmudict" or (
        config.tokenizer.type == "symbol" and config.tokenizer.target_split == "space"
    ):
        return "g2p"
    return "bleu"


def inputs_to_decode(kind: str, pairs) -> list[str]:
    """The sources to decode for scoring: each distinct source once for `g2p`
    (all its targets are references), every pair's source for `bleu`."""
    if kind == "g2p":
        return list(dict.fromkeys(pair.source for pair in pairs))
    return [pair.source for pair in pairs]


def score_outputs(kind: str, pairs, hypotheses: Sequence[str]) -> dict:
    """Scores hypotheses for `inputs_to_decode(kind, pairs)`, in that order."""
    if kind == "g2p":
        references = collections.defaultdict(list)
        for pair in pairs:
            references[pair.source].append(pair.target)
        sources = inputs_to_decode(kind, pairs)
        return g2p_scores(hypotheses, [references[source] for source in sources])
    return bleu_scores(hypotheses, [pair.target for pair in pairs])


def format_scores(values: dict) -> str:
    if "per" in values:
        return f"PER {values['per']:.2f}%  WER {values['wer']:.2f}%  ({values['words']} words)"
    return (
        f"BLEU {values['bleu']:.2f}  chrF {values['chrf']:.2f}  ({values['sentences']} sentences)"
        f"\n  {values['bleu_signature']}\n  {values['chrf_signature']}"
    )


# --- Keras decoding ---------------------------------------------------------


def decoder_step_function(decoder_step, config):
    """The one-step decoder model as a `tf.function` with named inputs.

    Inputs: `token_ids`, `states` (plus `encoder_outputs`, `source_lengths`
    with attention); outputs `log_probs`, `next_states`. The Keras decoder, the
    ONNX export and the SavedModel's `decode_step` all trace this one function.
    """
    import tensorflow as tf

    hidden, layers = config.hidden_dim, config.num_layers
    signature = [
        tf.TensorSpec([None], tf.int32, name="token_ids"),
        tf.TensorSpec([2 * layers, None, hidden], tf.float32, name="states"),
    ]
    if config.attention == "luong":
        signature += [
            tf.TensorSpec([None, None, hidden], tf.float32, name="encoder_outputs"),
            tf.TensorSpec([None], tf.int32, name="source_lengths"),
        ]

        @tf.function(input_signature=signature)
        def step(token_ids, states, encoder_outputs, source_lengths):
            outputs = decoder_step(
                {"token_ids": token_ids, "states": states, "encoder_outputs": encoder_outputs,
                 "source_lengths": source_lengths},
                training=False,
            )
            return {"log_probs": outputs["log_probs"], "next_states": outputs["next_states"]}

    else:

        @tf.function(input_signature=signature)
        def step(token_ids, states):
            outputs = decoder_step({"token_ids": token_ids, "states": states}, training=False)
            return {"log_probs": outputs["log_probs"], "next_states": outputs["next_states"]}

    return step


class _SearchTranslator:
    """Text in, text out through `serving.search` over `encode_batch` and `step`.

    Subclasses set `config` (reversal, decode settings), `source_tokenizer`,
    `target_tokenizer`, `encode_batch`, `step` and `batch_axes`.
    """

    config: Config
    batch_axes: dict

    def translate_ids(
        self,
        sources: Sequence[Sequence[int]],
        beam_size: int | None = None,
        n_best: int = 1,
        batch_size: int = 64,
        progress: bool = False,
        length_penalty: float | None = None,
    ) -> list[list[Hypothesis]]:
        """Decodes id lists; results come back in input order. `beam_size` and
        `length_penalty` default to the run's `decode` settings."""
        decode = self.config.decode
        beam_size = beam_size or decode.beam_size
        if length_penalty is None:
            length_penalty = decode.length_penalty
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(sources), desc="decoding", unit="sentence", file=sys.stderr)
        results = decode_in_batches(
            self.encode_batch,
            self.step,
            [list(source) for source in sources],
            reverse=self.config.model.reverse_source,
            max_length_a=decode.max_length_a,
            max_length_b=decode.max_length_b,
            batch_size=batch_size,
            progress=bar.update if bar else None,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            beam_size=beam_size,
            n_best=n_best,
            length_penalty=length_penalty,
            batch_axes=self.batch_axes,
        )
        if bar:
            bar.close()
        return results

    def translate(self, texts: Sequence[str], **kwargs) -> list[str]:
        """Translates text lines; returns the best output of each, in order."""
        sources = [self.source_tokenizer.encode(text) for text in texts]
        results = self.translate_ids(sources, **kwargs)
        return [
            self.target_tokenizer.decode(found[0].token_ids) if found else "" for found in results
        ]


class KerasTranslator(_SearchTranslator):
    """Decodes with the Keras encoder and decoder-step models and the numpy search.

    Args:
        model: the trained `build_seq2seq` model.
        config: Config. The run's config (model shape, decode settings).
        source_tokenizer: encodes source text.
        target_tokenizer: decodes output ids.
    """

    def __init__(self, model, config: Config, source_tokenizer, target_tokenizer):
        import tensorflow as tf

        from keras_s2s.models import build_inference_models

        self.config = config
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.encoder, self.decoder_step = build_inference_models(model, config.model)

        # One trace each, with dynamic batch and time axes.
        @tf.function(
            input_signature=[tf.TensorSpec([None, None], tf.int32, name="source_ids")],
            reduce_retracing=True,
        )
        def encode(source_ids):
            return self.encoder(source_ids, training=False)

        self._encode = encode
        self._step = decoder_step_function(self.decoder_step, config.model)
        self._attention = config.model.attention == "luong"
        self.batch_axes = {"states": 1}

    def encode_batch(self, source_ids: np.ndarray, source_lengths: np.ndarray) -> dict:
        outputs = self._encode(source_ids)
        state = {"states": outputs["states"].numpy().astype(np.float32)}
        if self._attention:
            state["encoder_outputs"] = outputs["encoder_outputs"].numpy().astype(np.float32)
            state["source_lengths"] = source_lengths.astype(np.int32)
        return state

    def step(self, token_ids: np.ndarray, state: dict):
        if self._attention:
            outputs = self._step(
                token_ids, state["states"], state["encoder_outputs"], state["source_lengths"]
            )
        else:
            outputs = self._step(token_ids, state["states"])
        return outputs["log_probs"].numpy(), {"states": outputs["next_states"].numpy()}


class KerasEnsembleTranslator(_SearchTranslator):
    """Decodes with several trained runs as one model (`serving.search.Ensemble`).

    The members must share their tokenizers and source reversal; their model
    shapes may differ. Decode settings come from the first member.

    Args:
        members: `KerasTranslator`s, one per run.
    """

    def __init__(self, members: Sequence[KerasTranslator]):
        from serving.search import Ensemble

        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            if member.config.model.reverse_source != first.config.model.reverse_source:
                raise ValueError(f"ensemble member {index}: model.reverse_source differs from member 0's")
        self.members = list(members)
        self.config = first.config
        self.source_tokenizer, self.target_tokenizer = first.source_tokenizer, first.target_tokenizer
        self._ensemble = Ensemble([m.encode_batch for m in members], [m.step for m in members],
                                  [m.batch_axes for m in members])
        self.encode_batch, self.step = self._ensemble.encode, self._ensemble.step
        self.batch_axes = self._ensemble.batch_axes


def load_run(run_dir: str, checkpoint: str = "best"):
    """Loads a run directory: `(config, model, source_tokenizer, target_tokenizer)`."""
    from keras_s2s.data.tokenizers import load_tokenizers
    from keras_s2s.models import build_seq2seq

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: not found; is {run_dir} a run directory?")
    config = Config.load(config_path)
    source_tokenizer, target_tokenizer = load_tokenizers(run_dir, config.tokenizer)
    model = build_seq2seq(config.model)
    weights = os.path.join(run_dir, "checkpoints", f"{checkpoint}.weights.h5")
    if checkpoint == "averaged" and not os.path.exists(weights):
        raise FileNotFoundError(f"{weights}: not found; train with training.average_last_epochs > 0")
    if not os.path.exists(weights):
        weights = os.path.join(run_dir, "checkpoints", "last.weights.h5")
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{run_dir}/checkpoints: no best or last weights found")
    model.load_weights(weights)
    return config, model, source_tokenizer, target_tokenizer


def make_translator(
    run_dir: str, checkpoint: str = "best", ensemble: Sequence[str] = ()
) -> KerasTranslator | KerasEnsembleTranslator:
    """A `KerasTranslator` for a run directory's best (or last) weights; with
    `ensemble` run directories, a `KerasEnsembleTranslator` of all of them."""
    from keras_s2s.data.tokenizers import tokenizer_files

    translators, first_tokenizers = [], None
    for directory in [run_dir, *ensemble]:
        config, model, source_tokenizer, target_tokenizer = load_run(directory, checkpoint=checkpoint)
        paths = tokenizer_files(directory, config.tokenizer)
        tokenizers = [pathlib.Path(path).read_bytes() for path in paths]
        if first_tokenizers is not None and tokenizers != first_tokenizers:
            raise ValueError(f"{directory}: its tokenizers ({', '.join(paths)}) differ from {run_dir}'s; "
                             "ensemble members must share their vocabularies")
        first_tokenizers = first_tokenizers or tokenizers
        translators.append(KerasTranslator(model, config, source_tokenizer, target_tokenizer))
    return translators[0] if len(translators) == 1 else KerasEnsembleTranslator(translators)


def evaluate(
    run_dir: str,
    split: str = "test",
    beam_size: int | None = None,
    batch_size: int = 64,
    samples: int = 5,
    out=None,
    checkpoint: str = "best",
    length_penalty: float | None = None,
    ensemble: Sequence[str] = (),
) -> dict:
    """Decodes a split of a run, writes hypotheses and scores, prints a summary.

    Writes `eval/{split}.beam{K}.hyp` (one line per distinct source, in split
    order) and `eval/{split}.beam{K}.json` (scores); with another checkpoint
    than `best` the stem is `{split}.{checkpoint}.beam{K}`, and a `length_penalty`
    other than the run's adds `.lp{value}` (tune it on `dev`, then use it on `test`).
    With `ensemble` run directories (same tokenizers, same data split), decodes with
    all the runs as one model and adds `.ensemble{N}` to the stem; the scores list
    the members.
    """
    from keras_s2s.data.readers import read_tsv

    out = out or sys.stdout
    translator = make_translator(run_dir, checkpoint=checkpoint, ensemble=ensemble)
    config = translator.config
    beam_size = beam_size or config.decode.beam_size
    if length_penalty is None:
        length_penalty = config.decode.length_penalty
    path = os.path.join(run_dir, "data", f"{split}.tsv")
    pairs = read_tsv(path)
    kind = metric_kind(config)
    sources = inputs_to_decode(kind, pairs)
    hypotheses = translator.translate(
        sources, beam_size=beam_size, batch_size=batch_size, progress=True, length_penalty=length_penalty
    )
    values = score_outputs(kind, pairs, hypotheses)
    values.update({"split": split, "beam_size": beam_size, "length_penalty": length_penalty, "metric": kind,
                   "checkpoint": checkpoint})
    if ensemble:
        values["ensemble"] = [os.path.abspath(d) for d in (run_dir, *ensemble)]
    directory = os.path.join(run_dir, "eval")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"{split}{'' if checkpoint == 'best' else '.' + checkpoint}.beam{beam_size}")
    if ensemble:
        stem += f".ensemble{1 + len(ensemble)}"
    if length_penalty != config.decode.length_penalty:
        stem += f".lp{length_penalty:g}"
    with open(stem + ".hyp.tmp", "w", encoding="utf-8") as handle:
        handle.writelines(h + "\n" for h in hypotheses)
    os.replace(stem + ".hyp.tmp", stem + ".hyp")
    with open(stem + ".json.tmp", "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)
    os.replace(stem + ".json.tmp", stem + ".json")
    print(f"{split} ({beam_size=}, {length_penalty=}): {format_scores(values)}", file=out)
    if samples:
        references = collections.defaultdict(list)
        for pair in pairs:
            references[pair.source].append(pair.target)
        print("samples (source -> hypothesis | reference):", file=out)
        for source, hypothesis in list(zip(sources, hypotheses))[:samples]:
            print(f"  {source} -> {hypothesis} | {' / '.join(references[source])}", file=out)
    print(f"hypotheses: {stem}.hyp", file=out)
    return values
