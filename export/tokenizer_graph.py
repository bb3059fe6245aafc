"""The tokenizers as ONNX graph nodes, for `translator.text.onnx`: text lines to ids in
front of the search, ids to text behind it.

Tokenizing without a character-splitting operator. A character tokenizer maps every
character to a symbol id, and an unknown character to unk. The graph keeps each line as
a row of segments, each either a known symbol or a piece of text not yet split, and splits
the text pieces on one symbol after another (`StringSplit` with that symbol as the
delimiter), the symbol itself becoming a segment between the pieces. When every symbol has
had its turn, what text remains is runs of unknown characters; `RegexFullMatch` with
`(?s).{k,}` counts each run's characters, and each character becomes one unk.
Space-separated symbol tokenizers split on Python's whitespace characters the same way
(each one a delimiter that leaves no segment) and look each word up.

Work per line is bounded by the model's source limit, not by the line: every segment
gives at least one token, so only a line's first `limit + 1` segments can matter. Each
split stops after `limit + 1` delimiters (`maxsplit`, the rest of the segment staying one
piece behind them) and each row keeps its first `limit + 1` segments, so no tensor grows
with the line's length; the one token past the limit tells an over-long line.

SentencePiece tokenizers use onnxruntime-extensions' operators (`EXTENSIONS_DOMAIN`).

Only `onnx` and `numpy` are needed here.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from export.onnx_graph import Graph, tensor

# onnxruntime-extensions' operators (SentencePiece): Python, C++, Java and C# load them.
EXTENSIONS_DOMAIN = "ai.onnx.contrib"
NUM_SPECIAL_IDS = 4
UNK_ID = 1
EMPTY, TEXT = -2, -1  # segment kinds besides a symbol id
# The characters for which Python's `str.isspace` holds: `str.split()` splits on them.
PYTHON_WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]


def tokenize(g: Graph, texts: str, tokenizer: dict, limit: int) -> tuple[str, str]:
    """`(ids int32 [batch, width], lengths int32 [batch])` of the lines `texts`.

    For symbol tokenizers a line gives at most `limit + 1` tokens (its first ones), so that
    a length above `limit` tells a line longer than the limit; SentencePiece lines are
    tokenized whole.
    """
    if tokenizer.get("type") == "sentencepiece":
        return _tokenize_sentencepiece(g, texts, tokenizer["model"])
    symbols = tokenizer["symbols"]
    keep = limit + 1
    segments = g.op("Unsqueeze", [texts, g.const([1], np.int64)], "segments")  # [batch, 1]
    kinds = g.op("Expand", [g.const([[TEXT]], np.int64), g.op("Shape", [segments])], "kinds")
    if tokenizer["split"] == "space":
        for space in PYTHON_WHITESPACE:
            segments, kinds = _split_stage(g, segments, kinds, space, EMPTY, keep)
        return _look_up_words(g, segments, kinds, symbols)
    lookup = {symbol: index for index, symbol in enumerate(symbols) if index >= NUM_SPECIAL_IDS}
    if tokenizer.get("lowercase"):
        # Upper-case characters that lower-case to one symbol take that symbol's id.
        for index, symbol in list(enumerate(symbols))[NUM_SPECIAL_IDS:]:
            upper = symbol.upper()
            if len(symbol) == 1 and len(upper) == 1 and upper != symbol and upper.lower() == symbol:
                lookup.setdefault(upper, index)
    for symbol, index in lookup.items():
        segments, kinds = _split_stage(g, segments, kinds, symbol, index, keep)
    return _expand_unknown(g, segments, kinds, keep)


def _split_stage(g: Graph, segments: str, kinds: str, symbol: str, index: int, keep: int) -> tuple[str, str]:
    """`_split_on` as a graph of its own: the body of a `Loop` of one iteration.

    onnxruntime before 1.32 plans a graph's memory in time that grows with the square of
    its values; a subgraph per split keeps that cost linear in the number of symbols.
    """
    stage = g._name("split")
    body = Graph(f"{stage}/")
    new_segments, new_kinds = _split_on(body, f"{stage}/segments_in", f"{stage}/kinds_in", symbol, index, keep)
    body.named("Identity", [new_segments], f"{stage}/segments_out")
    body.named("Identity", [new_kinds], f"{stage}/kinds_out")
    body.named("Identity", [f"{stage}/cond_in"], f"{stage}/cond_out")
    body_graph = helper.make_graph(
        body.nodes,
        stage,
        [
            tensor(f"{stage}/iteration", TensorProto.INT64, []),
            tensor(f"{stage}/cond_in", TensorProto.BOOL, []),
            tensor(f"{stage}/segments_in", TensorProto.STRING, ["batch", None]),
            tensor(f"{stage}/kinds_in", TensorProto.INT64, ["batch", None]),
        ],
        [
            tensor(f"{stage}/cond_out", TensorProto.BOOL, []),
            tensor(f"{stage}/segments_out", TensorProto.STRING, ["batch", None]),
            tensor(f"{stage}/kinds_out", TensorProto.INT64, ["batch", None]),
        ],
        body.initializers,
    )
    once = g.const(1, np.int64, "once")
    return g.op("Loop", [once, "", segments, kinds], "split_out", outputs=2, body=body_graph)


def _split_on(g: Graph, segments: str, kinds: str, symbol: str, index: int, keep: int) -> tuple[str, str]:
    """Splits every text segment on `symbol`, at most `keep` times; the symbol becomes a
    segment of kind `index` (none for `EMPTY`). Each row keeps its first `keep` segments."""
    i64 = np.int64
    pieces, counts = g.op(
        "StringSplit", [segments], "pieces", outputs=2, delimiter=symbol, maxsplit=keep
    )  # [b, l, p], [b, l]
    pieces_count = g.op("Shape", [pieces], start=2, end=3)
    position = g.op("Range", [g.const(0, i64), g.op("Squeeze", [pieces_count, g.const([0], i64)]), g.const(1, i64)])
    counts = g.op("Unsqueeze", [counts, g.const([2], i64)])  # [b, l, 1]
    # Pieces past a segment's count are padding, and both they and empty pieces are "".
    real = g.op("And", [g.op("Less", [position, counts]), g.op("RegexFullMatch", [pieces], pattern="(?s).+")])
    piece_kinds = g.op("Where", [real, g.const(TEXT, i64), g.const(EMPTY, i64)])
    between = g.op("Less", [position, g.op("Sub", [counts, g.const(1, i64)])])
    delimiter_kinds = g.op("Where", [between, g.const(index, i64), g.const(EMPTY, i64)])
    # A segment that was already a symbol stays one, in front of its (empty) pieces.
    kept = g.op(
        "Unsqueeze",
        [
            g.op("Where", [g.op("GreaterOrEqual", [kinds, g.const(0, i64)]), kinds, g.const(EMPTY, i64)]),
            g.const([2], i64),
        ],
    )
    kinds = g.op("Concat", [kept, _interleave(g, piece_kinds, delimiter_kinds)], axis=2)
    no_text = g.op("Expand", [g.const("", object), g.op("Shape", [delimiter_kinds])])
    texts = g.op(
        "Concat",
        [g.op("Expand", [g.const("", object), g.op("Shape", [kept])]), _interleave(g, pieces, no_text)],
        axis=2,
    )
    return _compact(g, texts, kinds, keep)


def _interleave(g: Graph, a: str, b: str) -> str:
    """`[b, l, p]` and `[b, l, p]` -> `[b, l, 2p]` as a0 b0 a1 b1 ..."""
    i64 = np.int64
    stacked = g.op(
        "Concat", [g.op("Unsqueeze", [a, g.const([3], i64)]), g.op("Unsqueeze", [b, g.const([3], i64)])], axis=3
    )
    return g.op("Reshape", [stacked, g.const([0, 0, -1], i64)])


def _compact(g: Graph, texts: str | None, kinds: str, keep: int) -> tuple[str | None, str]:
    """Flattens `[b, l, q]` segments to `[b, width]`, the non-empty ones first, in order,
    and at most `keep` of them."""
    i64 = np.int64
    flat = g.const([0, -1], i64)
    kinds = g.op("Reshape", [kinds, flat])
    empty = g.op("Equal", [kinds, g.const(EMPTY, i64)])
    size = g.op("Shape", [kinds], start=1, end=2)
    position = g.op(
        "Cast",
        [g.op("Range", [g.const(0, i64), g.op("Squeeze", [size, g.const([0], i64)]), g.const(1, i64)])],
        to=TensorProto.FLOAT,
    )
    key = g.op(
        "Add",
        [
            g.op("Mul", [g.op("Cast", [empty], to=TensorProto.FLOAT), g.op("Cast", [size], to=TensorProto.FLOAT)]),
            position,
        ],
    )
    filled = g.op(
        "ReduceSum", [g.op("Cast", [g.op("Not", [empty])], to=TensorProto.INT64), g.const([1], i64)], keepdims=0
    )  # [b]: the segments each row keeps
    width = g.op(
        "Max", [g.op("Reshape", [g.op("ReduceMax", [filled], keepdims=1), g.const([1], i64)]), g.const([1], i64)]
    )
    width = g.op("Min", [g.op("Min", [width, size]), g.const([keep], i64)])
    _, order = g.op("TopK", [key, width], "order", outputs=2, axis=1, largest=0)
    if texts is not None:
        texts = g.op("GatherElements", [g.op("Reshape", [texts, flat]), order], "segments", axis=1)
    return texts, g.op("GatherElements", [kinds, order], "kinds", axis=1)


def _expand_unknown(g: Graph, segments: str, kinds: str, keep: int) -> tuple[str, str]:
    """Symbols stay one token; a run of n unknown characters becomes min(n, keep) unks."""
    i64 = np.int64
    count = None
    for k in range(1, keep + 1):
        longer = g.op("Cast", [g.op("RegexFullMatch", [segments], pattern=f"(?s).{{{k},}}")], to=TensorProto.INT64)
        count = longer if count is None else g.op("Add", [count, longer])
    is_text = g.op("Equal", [kinds, g.const(TEXT, i64)])
    is_symbol = g.op("GreaterOrEqual", [kinds, g.const(0, i64)])
    count = g.op("Where", [is_text, count, g.op("Cast", [is_symbol], to=TensorProto.INT64)])  # tokens per segment
    slot = g.op("Range", [g.const(0, i64), g.const(keep, i64), g.const(1, i64)])
    valid = g.op("Less", [slot, g.op("Unsqueeze", [count, g.const([2], i64)])])  # [b, l, keep]
    token = g.op("Unsqueeze", [g.op("Where", [is_symbol, kinds, g.const(UNK_ID, i64)]), g.const([2], i64)])
    tokens = g.op("Where", [valid, token, g.const(EMPTY, i64)])
    _, tokens = _compact(g, None, tokens, keep)
    return _ids_and_lengths(g, tokens)


def _ids_and_lengths(g: Graph, tokens: str) -> tuple[str, str]:
    """`[b, width]` token ids with `EMPTY` padding -> int32 ids padded with 0, and lengths."""
    i64 = np.int64
    real = g.op("GreaterOrEqual", [tokens, g.const(0, i64)])
    ids = g.op("Cast", [g.op("Where", [real, tokens, g.const(0, i64)])], "token_ids", to=TensorProto.INT32)
    lengths = g.op(
        "Cast",
        [g.op("ReduceSum", [g.op("Cast", [real], to=TensorProto.INT64), g.const([1], i64)], keepdims=0)],
        "token_lengths",
        to=TensorProto.INT32,
    )
    return ids, lengths


def _look_up_words(g: Graph, segments: str, kinds: str, symbols: list) -> tuple[str, str]:
    """The words left between the whitespace, each looked up (unk when unknown)."""
    known = {symbol: index for index, symbol in enumerate(symbols) if index >= NUM_SPECIAL_IDS}
    ids = g.op(
        "LabelEncoder",
        [segments],
        "word_ids",
        domain="ai.onnx.ml",
        keys_strings=list(known),
        values_int64s=list(known.values()),
        default_int64=UNK_ID,
    )
    tokens = g.op("Where", [g.op("Equal", [kinds, g.const(TEXT, np.int64)]), ids, g.const(EMPTY, np.int64)])
    return _ids_and_lengths(g, tokens)


def _tokenize_sentencepiece(g: Graph, texts: str, model: bytes) -> tuple[str, str]:
    """onnxruntime-extensions' `SentencepieceTokenizer`: ragged ids -> a right-padded batch."""
    i64 = np.int64
    tokens, splits, _ = g.op(
        "SentencepieceTokenizer",
        [
            texts,
            g.const([0], i64),
            g.const([0.0], np.float32),
            g.const([False], bool),
            g.const([False], bool),
            g.const([False], bool),
        ],
        "pieces",
        outputs=3,
        domain=EXTENSIONS_DOMAIN,
        model=model,
    )
    starts = g.op("Slice", [splits, g.const([0], i64), g.const([-1], i64)], "starts")
    counts = g.op("Sub", [g.op("Slice", [splits, g.const([1], i64), g.const([np.iinfo(i64).max], i64)]), starts])
    width = g.op(
        "Max",
        [
            g.op(
                "Reshape",
                [
                    g.op("ReduceMax", [g.op("Concat", [g.const([0], i64), counts], axis=0)], keepdims=1),
                    g.const([1], i64),
                ],
            ),
            g.const([1], i64),
        ],
    )
    position = g.op("Range", [g.const(0, i64), g.op("Squeeze", [width, g.const([0], i64)]), g.const(1, i64)])
    real = g.op("Less", [position, g.op("Unsqueeze", [counts, g.const([1], i64)])])  # [batch, width]
    # A zero after the last token: where padding reads.
    padded = g.op("Concat", [tokens, g.const([0], np.int32)], axis=0)
    index = g.op("Add", [g.op("Unsqueeze", [starts, g.const([1], i64)]), position])
    index = g.op("Where", [real, index, g.op("Shape", [tokens])])
    ids = g.op("Gather", [padded, index], "token_ids", axis=0)
    return ids, g.op("Cast", [counts], "token_lengths", to=TensorProto.INT32)


def _detokenize_sentencepiece(g: Graph, ids: str, real: str, model: bytes) -> str:
    """onnxruntime-extensions' `SentencepieceDecoder`, one hypothesis at a time (a Loop)."""
    i64 = np.int64
    shape = g.op("Shape", [ids], start=0, end=2)
    rows = g.op("Reshape", [ids, g.op("Concat", [g.const([-1], i64), g.op("Shape", [ids], start=2)], axis=0)])
    keep = g.op("Reshape", [real, g.op("Shape", [rows])])
    body = Graph("decode/")
    row = body.op("Gather", [rows, "index"], axis=0)
    row = body.op("Compress", [row, body.op("Gather", [keep, "index"], axis=0)], axis=0)
    text = body.op("SentencepieceDecoder", [row], domain=EXTENSIONS_DOMAIN, model=model)
    body.named("Reshape", [text, body.const([1], i64)], "decoded")
    body.named("Identity", ["cond_in"], "cond_out")
    body_graph = helper.make_graph(
        body.nodes,
        "decode",
        [tensor("index", TensorProto.INT64, []), tensor("cond_in", TensorProto.BOOL, [])],
        [tensor("cond_out", TensorProto.BOOL, []), tensor("decoded", TensorProto.STRING, [1])],
        body.initializers,
    )
    count = g.op("Squeeze", [g.op("Shape", [rows], start=0, end=1), g.const([0], i64)])
    decoded = g.op("Loop", [count, g.const(True, bool)], "decode", body=body_graph)
    return g.op("Reshape", [decoded, shape])


def detokenize(g: Graph, hypotheses: str, lengths: str, tokenizer: dict) -> str:
    """`[batch, n_best, length]` ids -> `[batch, n_best]` strings; special ids are dropped,
    symbols joined with nothing (characters) or one space."""
    i64 = np.int64
    if tokenizer.get("type") == "sentencepiece":
        ids = g.op("Cast", [hypotheses], to=TensorProto.INT64)
        position = g.op(
            "Range",
            [
                g.const(0, i64),
                g.op("Squeeze", [g.op("Shape", [ids], start=2, end=3), g.const([0], i64)]),
                g.const(1, i64),
            ],
        )
        real = g.op(
            "And",
            [
                g.op("GreaterOrEqual", [ids, g.const(NUM_SPECIAL_IDS, i64)]),
                g.op("Less", [position, g.op("Unsqueeze", [lengths, g.const([2], i64)])]),
            ],
        )
        return _detokenize_sentencepiece(g, ids, real, tokenizer["model"])
    symbols = [symbol if index >= NUM_SPECIAL_IDS else "" for index, symbol in enumerate(tokenizer["symbols"])]
    table = g.const(np.array(symbols, dtype=object), object, "symbols")
    ids = g.op("Cast", [hypotheses], to=TensorProto.INT64)
    in_vocabulary = g.op(
        "And",
        [g.op("GreaterOrEqual", [ids, g.const(NUM_SPECIAL_IDS, i64)]), g.op("Less", [ids, g.const(len(symbols), i64)])],
    )
    position = g.op(
        "Range",
        [g.const(0, i64), g.op("Squeeze", [g.op("Shape", [ids], start=2, end=3), g.const([0], i64)]), g.const(1, i64)],
    )
    real = g.op("And", [in_vocabulary, g.op("Less", [position, g.op("Unsqueeze", [lengths, g.const([2], i64)])])])
    pieces = g.op("Gather", [table, g.op("Where", [real, ids, g.const(0, i64)])], axis=0)  # [b, n, length]
    separator = "" if tokenizer["split"] == "char" else " "

    # A Loop over the positions joins the pieces: StringConcat is elementwise.
    body = Graph("join/")
    piece = body.op(
        "Squeeze",
        [
            body.op("Gather", [pieces, body.op("Unsqueeze", ["position", body.const([0], i64)])], axis=2),
            body.const([2], i64),
        ],
    )
    keep = body.op(
        "Squeeze",
        [
            body.op("Gather", [real, body.op("Unsqueeze", ["position", body.const([0], i64)])], axis=2),
            body.const([2], i64),
        ],
    )
    joined = body.op("StringConcat", [body.op("StringConcat", ["text_in", body.const(separator, object)]), piece])
    joined = body.op("Where", ["started_in", joined, piece])
    body.named("Where", [keep, joined, "text_in"], "text_out")
    body.named("Or", ["started_in", keep], "started_out")
    body.named("Identity", ["cond_in"], "cond_out")
    body_graph = helper.make_graph(
        body.nodes,
        "join",
        [
            tensor("position", TensorProto.INT64, []),
            tensor("cond_in", TensorProto.BOOL, []),
            tensor("text_in", TensorProto.STRING, ["batch", "n_best"]),
            tensor("started_in", TensorProto.BOOL, ["batch", "n_best"]),
        ],
        [
            tensor("cond_out", TensorProto.BOOL, []),
            tensor("text_out", TensorProto.STRING, ["batch", "n_best"]),
            tensor("started_out", TensorProto.BOOL, ["batch", "n_best"]),
        ],
        body.initializers,
    )
    shape = g.op("Shape", [ids], start=0, end=2)
    start_text = g.op("Expand", [g.const("", object), shape])
    start_flag = g.op("Expand", [g.const(False, bool), shape])
    count = g.op("Squeeze", [g.op("Shape", [ids], start=2, end=3), g.const([0], i64)])
    text, _ = g.op("Loop", [count, g.const(True, bool), start_text, start_flag], "join", outputs=2, body=body_graph)
    return text
