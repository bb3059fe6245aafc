"""Configuration: dataclasses that round-trip through JSON and YAML.

A run is described by one `Config`. Presets live in `keras_s2s/configs/*.yaml`; the
command line changes single fields with `--set section.field=value`. Every
value is checked before training starts, and a bad one raises `ValueError`
naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from keras_s2s.config_values import at_least, from_mapping, one_of, positive

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
NUM_SPECIAL_IDS = 4
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is cleaned and split.

    Args:
        dataset: str. `cmudict`, `bible`, `tsv` (one `source<TAB>target` file)
            or `parallel` (two aligned files).
        path: str. The TSV file for `dataset: tsv`.
        source_path: str. Source side for `dataset: parallel`.
        target_path: str. Target side for `dataset: parallel`.
        stress: bool. Keep CMUdict stress marks (`AH0`) or strip them (`AH`).
        letters_only: bool. CMUdict: keep only words made of the letters a-z.
        bible_source_module: str. SWORD module name for the source side.
        bible_target_module: str. SWORD module name for the target side.
        min_length: int. Pairs with a side shorter than this (in characters
            after stripping) are filtered.
        max_length: int. Pairs with a side longer than this many tokens are
            filtered.
        max_length_ratio: float. Pairs whose token lengths differ by more than
            this factor are filtered.
        deduplicate: bool. Drop exact duplicate pairs.
        dev_size: float. Share (< 1) or count (>= 1) of distinct sources for dev.
        test_size: float. Share (< 1) or count (>= 1) of distinct sources for test.
        dev_path: str. A `source<TAB>target` file used as the dev split as it is (filtered
            like the corpus); `dev_size` is then ignored.
        test_path: str. The same for the test split (a shared task's or a lexicon's own
            test set); `test_size` is then ignored.
        dev_source_path, dev_target_path: str. The dev split as two line-aligned files
            instead of `dev_path`.
        test_source_path, test_target_path: str. The same for the test split.
        limit: int. Use at most this many pairs (0: all); for quick runs.
        seed: int. Seed of the split.
    """

    dataset: str = "cmudict"
    path: str = ""
    source_path: str = ""
    target_path: str = ""
    stress: bool = False
    letters_only: bool = True
    bible_source_module: str = "spaRV1909eb"
    bible_target_module: str = "engKJV2006eb"
    min_length: int = 1
    max_length: int = 64
    max_length_ratio: float = 3.0
    deduplicate: bool = True
    dev_size: float = 0.02
    test_size: float = 0.1
    dev_path: str = ""
    test_path: str = ""
    dev_source_path: str = ""
    dev_target_path: str = ""
    test_source_path: str = ""
    test_target_path: str = ""
    limit: int = 0
    seed: int = 1234

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad `data` key."""
        one_of("data.dataset", self.dataset, ("cmudict", "bible", "tsv", "parallel"))
        if self.dataset == "tsv" and not self.path:
            raise ValueError("data.path: required when data.dataset is 'tsv'")
        if self.dataset == "parallel" and not (self.source_path and self.target_path):
            raise ValueError("data.source_path, data.target_path: required when data.dataset is 'parallel'")
        for split in ("dev", "test"):
            tsv, source, target = (getattr(self, f"{split}{part}_path") for part in ("", "_source", "_target"))
            if tsv and (source or target):
                raise ValueError(f"data.{split}_path, data.{split}_source_path: name the {split} split once")
            if bool(source) != bool(target):
                raise ValueError(f"data.{split}_source_path, data.{split}_target_path: give both or neither")
        positive("data.max_length", self.max_length)
        at_least("data.min_length", self.min_length, 0)
        positive("data.max_length_ratio", self.max_length_ratio)
        at_least("data.dev_size", self.dev_size, 0)
        at_least("data.test_size", self.test_size, 0)
        at_least("data.limit", self.limit, 0)


@dataclass
class TokenizerConfig:
    """How text becomes ids.

    Args:
        type: str. `symbol` (characters or space-separated symbols, for G2P
            and transliteration) or `sentencepiece` (subwords).
        source_split: str. Symbol tokenizer: `char` or `space` for the source.
        target_split: str. Symbol tokenizer: `char` or `space` for the target.
        vocabulary_size: int. SentencePiece vocabulary size (per side, or in
            all when `joint`).
        model_type: str. SentencePiece `unigram` or `bpe`.
        joint: bool. One SentencePiece model for both sides.
        character_coverage: float. SentencePiece character coverage.
        lowercase: bool. Lowercase the source before tokenizing.
    """

    type: str = "symbol"
    source_split: str = "char"
    target_split: str = "space"
    vocabulary_size: int = 8000
    model_type: str = "unigram"
    joint: bool = False
    character_coverage: float = 1.0
    lowercase: bool = False

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad `tokenizer` key."""
        one_of("tokenizer.type", self.type, ("symbol", "sentencepiece"))
        one_of("tokenizer.source_split", self.source_split, ("char", "space"))
        one_of("tokenizer.target_split", self.target_split, ("char", "space"))
        one_of("tokenizer.model_type", self.model_type, ("unigram", "bpe"))
        if self.vocabulary_size <= NUM_SPECIAL_IDS:
            raise ValueError(
                f"tokenizer.vocabulary_size: {self.vocabulary_size} leaves no room "
                f"beyond the {NUM_SPECIAL_IDS} special ids"
            )


@dataclass
class ModelConfig:
    """Shape of the encoder-decoder.

    Args:
        num_layers: int. LSTM layers in the encoder and in the decoder.
        hidden_dim: int. Size of every LSTM state.
        embedding_dim: int. Size of the source and target embeddings.
        dropout: float. Dropout between layers and before the output layer.
        attention: str. `none` (the paper's fixed vector) or `luong`
            (general-score attention over the encoder outputs).
        bidirectional_encoder: bool. Make the bottom encoder layer
            bidirectional (hidden_dim / 2 units each way, concatenated).
        bidirectional_layers: int. How many encoder layers, from the bottom,
            are bidirectional; 0 leaves it to `bidirectional_encoder` (1 or 0).
        init_scale: float. Weights start uniform in [-init_scale, init_scale].
        reverse_source: bool. Feed the source reversed (real tokens only;
            padding stays on the right), as the paper found best.
        float32_logits: bool. Under mixed precision, compute the output
            projection in float32 (true) or in the compute dtype with the
            logits cast to float32 after it (false; the loss and the
            log-softmax are float32 either way). The projection is the largest
            matrix product of a big-vocabulary model: on a GPU false is much
            faster (BENCHMARKS.md); without mixed precision it changes nothing.
        source_vocabulary_size: int. Filled in from the source tokenizer.
        target_vocabulary_size: int. Filled in from the target tokenizer.
    """

    num_layers: int = 2
    hidden_dim: int = 256
    embedding_dim: int = 128
    dropout: float = 0.2
    attention: str = "none"
    bidirectional_encoder: bool = False
    bidirectional_layers: int = 0
    init_scale: float = 0.08
    reverse_source: bool = True
    float32_logits: bool = True
    source_vocabulary_size: int = 0
    target_vocabulary_size: int = 0

    def is_bidirectional(self, index: int) -> bool:
        """Whether encoder layer `index` (0 = bottom) reads in both directions."""
        count = self.bidirectional_layers or int(bool(self.bidirectional_encoder))
        return index < count

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad `model` key."""
        positive("model.num_layers", self.num_layers)
        positive("model.hidden_dim", self.hidden_dim)
        positive("model.embedding_dim", self.embedding_dim)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout: {self.dropout} is not in [0, 1)")
        one_of("model.attention", self.attention, ("none", "luong"))
        if not 0 <= self.bidirectional_layers <= self.num_layers:
            raise ValueError(
                f"model.bidirectional_layers: {self.bidirectional_layers} is not in [0, model.num_layers = {self.num_layers}]"
            )
        if self.is_bidirectional(0) and self.hidden_dim % 2:
            raise ValueError("model.hidden_dim: must be even with a bidirectional encoder layer")
        positive("model.init_scale", self.init_scale)
        for key in ("source_vocabulary_size", "target_vocabulary_size"):
            size = getattr(self, key)
            if size and size <= NUM_SPECIAL_IDS:
                raise ValueError(f"model.{key}: {size} leaves no room beyond the {NUM_SPECIAL_IDS} special ids")


@dataclass
class TrainingConfig:
    """How the model is trained.

    Args:
        epochs: int. Passes over the training data.
        optimizer: str. `adam` or `paper_sgd` (SGD lr 0.7, halved every half
            epoch after epoch 5).
        learning_rate: float. Initial learning rate.
        learning_rate_decay_start: float. `paper_sgd`: epoch after which the
            rate is halved.
        learning_rate_decay_every: float. `paper_sgd`: epochs between halvings.
        clip_norm: float. Global gradient-norm clipping threshold.
        label_smoothing: float. Label smoothing of the cross-entropy.
        token_budget: int. Padded tokens per batch (batch size x bucket
            length); the batch size in sentences follows from it.
        max_batch_size: int. Upper bound on sentences per batch.
        bucketing: bool. Batch sentences of similar length together; off:
            shuffle and pad every batch to its longest sentence.
        shuffle_buffer: int. Size of the shuffle buffer (0: whole data set).
        early_stopping_patience: int. Epochs without dev-loss improvement
            before stopping (0: off).
        reduce_lr_patience: int. Adam: halve the learning rate after this
            many epochs without dev-loss improvement (0: off).
        learning_rate_schedule: str. Adam: `constant` (optionally halved on
            plateaus, see `reduce_lr_patience`) or `cosine`: a linear warm-up
            over `warmup_steps`, then a cosine decay to
            `final_learning_rate_ratio` of the peak at the last planned step.
            With a fixed time budget, cosine to the planned end usually beats
            halving on noisy dev-loss plateaus.
        warmup_steps: int. `cosine`: steps of linear warm-up.
        final_learning_rate_ratio: float. `cosine`: final rate / peak rate.
        fit_schedule_to_budget: bool. `cosine` with a time budget
            (`--max-minutes`): after each epoch, move the end of the decay to
            the step at which the budget is expected to stop training (never
            past the configured epochs), so that a budget that cuts the run
            short still ends it at the final rate.
        mixed_precision: str. `none`, `float16`, `bfloat16`, or `auto`: bfloat16 on GPUs and
            on CPUs that compute it natively (AVX-512 BF16, AMX), float32 elsewhere
            (`keras_s2s.training.precision`).
        eval_sample_size: int. Dev sentences decoded each epoch for the dev
            metric (0: off).
        save_every_steps: int. Also back up every N steps (0: each epoch).
        average_last_epochs: int. Keep the weights of the last N epochs and
            write their average as `checkpoints/averaged.weights.h5` at the end
            (0: off; evaluate it with `--checkpoint averaged`).
        steps_per_execution: int. Batches run per call into the graph.
        seed: int. Seed of weights, shuffling and dropout.
    """

    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 0.002
    learning_rate_decay_start: float = 5.0
    learning_rate_decay_every: float = 0.5
    clip_norm: float = 5.0
    label_smoothing: float = 0.0
    token_budget: int = 4096
    max_batch_size: int = 256
    bucketing: bool = True
    shuffle_buffer: int = 0
    early_stopping_patience: int = 0
    reduce_lr_patience: int = 0
    learning_rate_schedule: str = "constant"
    warmup_steps: int = 0
    final_learning_rate_ratio: float = 0.02
    fit_schedule_to_budget: bool = True
    mixed_precision: str = "none"
    eval_sample_size: int = 200
    save_every_steps: int = 0
    average_last_epochs: int = 0
    steps_per_execution: int = 1
    seed: int = 1234

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad `training` key."""
        positive("training.epochs", self.epochs)
        one_of("training.optimizer", self.optimizer, ("adam", "paper_sgd"))
        positive("training.learning_rate", self.learning_rate)
        positive("training.learning_rate_decay_every", self.learning_rate_decay_every)
        at_least("training.clip_norm", self.clip_norm, 0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"training.label_smoothing: {self.label_smoothing} is not in [0, 1)")
        positive("training.token_budget", self.token_budget)
        positive("training.max_batch_size", self.max_batch_size)
        at_least("training.shuffle_buffer", self.shuffle_buffer, 0)
        at_least("training.early_stopping_patience", self.early_stopping_patience, 0)
        at_least("training.reduce_lr_patience", self.reduce_lr_patience, 0)
        one_of("training.learning_rate_schedule", self.learning_rate_schedule, ("constant", "cosine"))
        at_least("training.warmup_steps", self.warmup_steps, 0)
        if not 0.0 <= self.final_learning_rate_ratio <= 1.0:
            raise ValueError(f"training.final_learning_rate_ratio: {self.final_learning_rate_ratio} is not in [0, 1]")
        if self.learning_rate_schedule == "cosine" and self.optimizer != "adam":
            raise ValueError(
                "training.learning_rate_schedule: 'cosine' applies to the adam optimizer; "
                f"training.optimizer is '{self.optimizer}', which has its own schedule"
            )
        if self.learning_rate_schedule == "cosine" and self.reduce_lr_patience:
            raise ValueError(
                "training.reduce_lr_patience: must be 0 with learning_rate_schedule "
                "'cosine' (the schedule sets the rate)"
            )
        one_of("training.mixed_precision", self.mixed_precision, ("none", "float16", "bfloat16", "auto"))
        at_least("training.eval_sample_size", self.eval_sample_size, 0)
        at_least("training.save_every_steps", self.save_every_steps, 0)
        at_least("training.average_last_epochs", self.average_last_epochs, 0)
        positive("training.steps_per_execution", self.steps_per_execution)


@dataclass
class DecodeConfig:
    """Search settings used by evaluation and translation.

    Args:
        beam_size: int. Beam width (1: greedy).
        n_best: int. Hypotheses returned per input.
        length_penalty: float. Scores are divided by length ** length_penalty.
        max_length_a: float. Output length limit is a * source_length + b.
        max_length_b: int. See `max_length_a`.
        metric: str. `bleu` (BLEU and chrF), `g2p` (PER and WER) or `auto`
            (`g2p` for CMUdict and space-separated symbol targets).
    """

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0
    max_length_a: float = 2.0
    max_length_b: int = 10
    metric: str = "auto"

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad `decode` key."""
        positive("decode.beam_size", self.beam_size)
        positive("decode.n_best", self.n_best)
        if self.n_best > self.beam_size:
            raise ValueError(f"decode.n_best: {self.n_best} is larger than decode.beam_size {self.beam_size}")
        at_least("decode.length_penalty", self.length_penalty, 0)
        at_least("decode.max_length_a", self.max_length_a, 0)
        at_least("decode.max_length_b", self.max_length_b, 1)
        one_of("decode.metric", self.metric, ("auto", "bleu", "g2p"))


@dataclass
class Config:
    """A whole run: data, tokenizers, model, training and decoding."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    # Serialisation.
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> Config:
        config = from_mapping(cls, values, where)
        try:
            config.validate()
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        return config

    @classmethod
    def from_json(cls, text: str, where: str = "config.json") -> Config:
        return cls.from_dict(json.loads(text), where)

    @classmethod
    def from_yaml(cls, text: str, where: str = "config.yaml") -> Config:
        values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a mapping at the top level")
        return cls.from_dict(values, where)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Config:
        """Reads a `.json` or `.yaml` config file."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if path.endswith(".json"):
            return cls.from_json(text, path)
        return cls.from_yaml(text, path)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the config as JSON, atomically."""
        from serving.files import atomic_write

        with atomic_write(os.fspath(path)) as handle:
            handle.write(self.to_json())

    def override(self, assignments: list[str]) -> Config:
        """Returns a copy with `section.key=value` assignments applied.

        Values are parsed as YAML scalars (`true`, `3`, `0.5`, `text`).
        """
        values = self.to_dict()
        for assignment in assignments:
            if "=" not in assignment:
                raise ValueError(f"--set {assignment!r}: expected section.key=value")
            key, raw = assignment.split("=", 1)
            parts = key.strip().split(".")
            if len(parts) == 1 and parts[0] == "name":
                values["name"] = raw
                continue
            if len(parts) != 2 or parts[0] not in values or not isinstance(values[parts[0]], dict):
                raise ValueError(
                    f"--set {assignment!r}: unknown key {key!r}; "
                    f"sections are {', '.join(k for k in values if k != 'name')}"
                )
            section, name = parts
            if name not in values[section]:
                raise ValueError(
                    f"--set {assignment!r}: unknown key {key!r}; {section} has {', '.join(values[section])}"
                )
            values[section][name] = yaml.safe_load(raw) if raw != "" else ""
        return Config.from_dict(values, "--set")

    # Checks.
    def validate(self) -> None:
        """Raises `ValueError` naming the key of the first bad value."""
        for section in (self.data, self.tokenizer, self.model, self.training, self.decode):
            section.validate()


def load_preset(name_or_path: str) -> Config:
    """Loads a config file by path, or `keras_s2s/configs/NAME.yaml` by preset name (a
    folder of that name, a run directory say, is not a config)."""
    if os.path.isfile(name_or_path):
        return Config.load(name_or_path)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    candidate = os.path.join(here, f"{name_or_path}.yaml")
    if os.path.exists(candidate):
        return Config.load(candidate)
    raise ValueError(f"config {name_or_path!r}: no such file or preset in {here}")
