"""Attention maps: which source tokens each output token of a translation looked at.

    s2s attention runs/g2p_best "phoneme" "keras" --out attention.png

Each input is translated with the run's beam search; the output is then fed back with
teacher forcing through the trained model and its Luong attention weights are read, one
row per output token (the end-of-sequence token last), one column per source token, in
reading order (the model reads a reversed source; the columns are put back).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_s2s.config import BOS_ID, EOS_ID
from serving.files import atomic_path


def _piece(tokenizer, token_id: int) -> str:
    if hasattr(tokenizer, "symbols"):
        return tokenizer.symbols[token_id]
    return tokenizer.processor.id_to_piece(int(token_id))


def attention_maps(run_dir: str, texts: Sequence[str], beam_size: int | None = None, checkpoint: str = "best"):
    """Translates `texts` and returns, per text, `(source_pieces, output_pieces, weights)`
    with `weights` `(len(output_pieces), len(source_pieces))`, rows summing to 1."""
    import keras

    from keras_s2s.decoder import KerasTranslator, load_run
    from serving.batching import pad_sources

    config, model, source_tokenizer, target_tokenizer = load_run(run_dir, checkpoint=checkpoint)
    if config.model.attention != "luong":
        raise ValueError(f"{run_dir}: model.attention is {config.model.attention!r}; attention maps need 'luong'")
    # Read the weights off the training graph before the inference models call the layer again.
    probe = keras.Model(model.inputs, model.get_layer("attention").output[1])
    translator = KerasTranslator(model, config, source_tokenizer, target_tokenizer)
    sources = [source_tokenizer.encode(text) for text in texts]
    found = translator.translate_ids(sources, beam_size=beam_size)
    maps = []
    for text, source, hypotheses in zip(texts, sources, found):
        if not source:
            raise ValueError(f"input {text!r}: no source tokens to attend to")
        output = hypotheses[0].token_ids if hypotheses else []
        ids, _ = pad_sources([source], reverse=config.model.reverse_source)
        decoder_input = np.array([[BOS_ID, *output]], dtype="int32")
        weights = np.asarray(probe({"source_ids": ids, "decoder_input_ids": decoder_input}, training=False))[0]
        if config.model.reverse_source:
            weights = weights[:, ::-1]
        maps.append(
            (
                [_piece(source_tokenizer, i) for i in source],
                [_piece(target_tokenizer, i) for i in [*output, EOS_ID]],
                weights,
            )
        )
    return maps


def plot_attention(maps, texts: Sequence[str], path: str) -> str:
    """Draws one heat map per input into `path` (PNG), written beside it and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(maps))
    rows = (len(maps) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat[len(maps) :]:
        axis.axis("off")
    for axis, text, (source, output, weights) in zip(axes.flat, texts, maps):
        axis.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_xticks(range(len(source)), source, rotation=90 if max(map(len, source)) > 2 else 0)
        axis.set_yticks(range(len(output)), output)
        axis.set_title(text)
        axis.set_xlabel("source")
    figure.tight_layout()
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=100)
    plt.close(figure)
    return path
