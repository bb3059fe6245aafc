import numpy as np
import pytest

from serving.batching import max_output_lengths
from serving.ensemble import Ensemble
from serving.search import beam_search, greedy_search, search

BOS, EOS, VOCAB = 2, 3, 12


class ToyModel:
    """A small random recurrent step function with a per-sentence memory."""

    def __init__(self, seed=0, hidden=8):
        rng = np.random.default_rng(seed)
        self.embedding = rng.normal(size=(VOCAB, hidden)).astype(np.float32)
        self.recurrent = rng.normal(size=(hidden, hidden)).astype(np.float32) / np.sqrt(hidden)
        self.output = rng.normal(size=(hidden, VOCAB)).astype(np.float32) * 1.5
        self.calls = 0

    def initial_state(self, batch, seed=1):
        rng = np.random.default_rng(seed)
        # states: (layers=1 * 2, batch, hidden); memory: (batch, hidden), static.
        states = rng.normal(size=(2, batch, 8)).astype(np.float32)
        memory = rng.normal(size=(batch, 8)).astype(np.float32)
        return {"states": states, "memory": memory}

    def step(self, token_ids, state):
        self.calls += 1
        h = np.tanh(state["states"][0] @ self.recurrent + self.embedding[token_ids] + state["memory"])
        logits = h @ self.output
        logits[:, :2] = -1e9  # never pad or unk-like ids
        log_probs = (
            logits
            - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
            - logits.max(1, keepdims=True)
        )
        return log_probs.astype(np.float32), {"states": np.stack([h, state["states"][1]])}


def _tokens(results):
    return [[h.token_ids for h in found] for found in results]


@pytest.mark.parametrize("seed", range(4))
def test_beam_one_equals_greedy(seed):
    model = ToyModel(seed)
    lengths = max_output_lengths([3, 5, 8, 1, 6], 1.5, 4)
    greedy = greedy_search(model.step, model.initial_state(5, seed), bos_id=BOS, eos_id=EOS, max_lengths=lengths)
    beam = beam_search(
        model.step, model.initial_state(5, seed), bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=1
    )
    assert _tokens(greedy) == _tokens(beam)
    for g, b in zip(greedy, beam):
        assert g[0].score == pytest.approx(b[0].score, abs=1e-5)


def test_beam_finds_the_known_best_path_that_greedy_misses():
    # Step 1: token 4 (p=0.6) or 5 (p=0.4). After 4 every continuation is flat
    # (p=0.1 each); after 5, eos is certain. Best: [5] (log 0.4) over [4, x, ...].
    def step(token_ids, state):
        rows = len(token_ids)
        log_probs = np.full((rows, 10), np.log(1e-9), dtype=np.float32)
        for row, token in enumerate(token_ids):
            if token == BOS:
                log_probs[row, 4], log_probs[row, 5] = np.log(0.6), np.log(0.4)
            elif token == 5:
                log_probs[row, EOS] = 0.0
            else:
                log_probs[row, 4:10] = np.log(0.1)
                log_probs[row, EOS] = np.log(0.4)
        return log_probs, {"states": state["states"]}

    state = {"states": np.zeros((2, 1, 1), dtype=np.float32)}
    greedy = greedy_search(step, state, bos_id=BOS, eos_id=EOS, max_lengths=[5], length_penalty=0.0)
    beam = beam_search(step, state, bos_id=BOS, eos_id=EOS, max_lengths=[5], beam_size=3, length_penalty=0.0)
    assert greedy[0][0].token_ids == [4]
    assert greedy[0][0].log_prob == pytest.approx(np.log(0.6) + np.log(0.4), rel=1e-5)
    assert beam[0][0].token_ids == [5]
    assert beam[0][0].log_prob == pytest.approx(np.log(0.4), rel=1e-5)


def test_n_best_is_distinct_and_ordered():
    model = ToyModel(3)
    results = beam_search(
        model.step, model.initial_state(4), bos_id=BOS, eos_id=EOS, max_lengths=[8] * 4, beam_size=6, n_best=4
    )
    for found in results:
        assert len(found) == 4
        assert len({tuple(h.token_ids) for h in found}) == 4
        scores = [h.score for h in found]
        assert scores == sorted(scores, reverse=True)
        for h in found:
            assert h.score == pytest.approx(h.log_prob / (len(h.token_ids) + h.finished) ** 1.0, rel=1e-5)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_batch_equals_one_by_one(beam_size):
    model = ToyModel(5)
    batch = 6
    state = model.initial_state(batch, seed=9)
    lengths = max_output_lengths([2, 9, 4, 4, 7, 1], 1.0, 3)
    together = search(model.step, state, bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=beam_size)
    for i in range(batch):
        alone_state = {"states": state["states"][:, i : i + 1], "memory": state["memory"][i : i + 1]}
        alone = search(
            model.step, alone_state, bos_id=BOS, eos_id=EOS, max_lengths=lengths[i : i + 1], beam_size=beam_size
        )
        assert alone[0][0].token_ids == together[i][0].token_ids
        assert alone[0][0].score == pytest.approx(together[i][0].score, abs=1e-5)


def test_outputs_respect_max_length():
    model = ToyModel(1)
    lengths = np.array([1, 2, 3])
    for beam_size in (1, 3):
        results = search(
            model.step, model.initial_state(3), bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=beam_size
        )
        for found, limit in zip(results, lengths):
            assert len(found[0].token_ids) <= limit


def _replay(model, state, row, tokens):
    """The summed log-probability of `tokens` for sentence `row`, one step at a time."""
    states = state["states"][:, row : row + 1]
    memory = state["memory"][row : row + 1]
    total, previous = 0.0, BOS
    for token in tokens:
        log_probs, updates = model.step(np.array([previous], np.int32), {"states": states, "memory": memory})
        total += float(log_probs[0, token])
        states, previous = updates["states"], token
    return total


@pytest.mark.parametrize("beam_size", [2, 4])
def test_every_hypothesis_scores_what_its_tokens_score(beam_size):
    # Each hypothesis's tokens, replayed through the model, give its log-probability:
    # the history follows the right parents, also when sentences leave mid-search and
    # for hypotheses cut at the length limit (which end with the limit's last token).
    model = ToyModel(5)
    lengths = np.array([2, 9, 4, 6, 3])
    state = model.initial_state(len(lengths), 3)
    results = beam_search(
        model.step, state, bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=beam_size, n_best=beam_size
    )
    cut = 0
    for row, (found, limit) in enumerate(zip(results, lengths)):
        assert found
        for hypothesis in found:
            tokens = hypothesis.token_ids + ([EOS] if hypothesis.finished else [])
            assert len(tokens) <= limit
            if not hypothesis.finished:
                assert len(tokens) == limit
                cut += 1
            assert _replay(model, state, row, tokens) == pytest.approx(hypothesis.log_prob, abs=1e-4)
    assert cut  # the limits are short enough that some hypotheses are cut


def test_wider_beam_never_scores_worse_on_this_model():
    model = ToyModel(7)
    lengths = [10] * 8
    narrow = beam_search(model.step, model.initial_state(8), bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=1)
    wide = beam_search(model.step, model.initial_state(8), bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=8)
    assert sum(w[0].score for w in wide) >= sum(n[0].score for n in narrow) - 1e-6


def test_n_best_larger_than_beam_is_refused():
    model = ToyModel()
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model.step, model.initial_state(1), bos_id=BOS, eos_id=EOS, max_lengths=[3], beam_size=2, n_best=3)


@pytest.mark.parametrize("beam_size", [1, 3, 5])
def test_a_step_that_selects_its_own_top_k_gives_the_same_search(beam_size):
    model = ToyModel(11)
    lengths = max_output_lengths([3, 6, 2, 8], 1.5, 4)

    def selecting_step(tokens, state):
        log_probs, updates = model.step(tokens, state)
        k = 2 * beam_size if beam_size > 1 else 1
        ids = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(log_probs, ids, axis=1), ids.astype(np.int64)), updates

    full = search(
        model.step,
        model.initial_state(4, 2),
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        n_best=min(2, beam_size),
    )
    selected = search(
        selecting_step,
        model.initial_state(4, 2),
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        n_best=min(2, beam_size),
    )
    assert _tokens(full) == _tokens(selected)
    for a, b in zip(full, selected):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)


def test_a_step_that_selects_too_few_tokens_is_refused():
    model = ToyModel(1)

    def stingy_step(tokens, state):
        log_probs, updates = model.step(tokens, state)
        ids = np.argsort(-log_probs, axis=1)[:, :3]
        return (np.take_along_axis(log_probs, ids, axis=1), ids), updates

    with pytest.raises(ValueError, match="returned 3 tokens per row; the search needs 10"):
        beam_search(stingy_step, model.initial_state(2), bos_id=BOS, eos_id=EOS, max_lengths=[5, 5], beam_size=5)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_sentences_leaving_keep_each_static_entry_with_its_sentence(beam_size):
    """Sentences end at different steps, so rows move when they leave the batch: a static
    entry on axis 0 and a copy of it on axis 1 must still belong to the same sentence, and
    the caller's arrays are not changed."""
    model = ToyModel(3)
    batch = 7
    state = model.initial_state(batch, seed=4)
    state["memory_t"] = np.ascontiguousarray(state["memory"].T)
    caller = {key: value.copy() for key, value in state.items()}
    seen = []

    def step(tokens, state):
        np.testing.assert_array_equal(state["memory"], state["memory_t"].T)
        seen.append(len(tokens))
        return model.step(tokens, state)

    lengths = max_output_lengths([1, 8, 2, 6, 3, 9, 4], 1.0, 1)
    results = search(
        step,
        state,
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        batch_axes={"states": 1, "memory_t": 1},
    )
    assert len(set(seen)) > 2  # rows left the batch at several steps
    for key in caller:
        np.testing.assert_array_equal(state[key], caller[key])
    for i in range(batch):
        alone = {"states": caller["states"][:, i : i + 1], "memory": caller["memory"][i : i + 1]}
        expected = search(
            model.step, alone, bos_id=BOS, eos_id=EOS, max_lengths=lengths[i : i + 1], beam_size=beam_size
        )
        assert results[i][0].token_ids == expected[0][0].token_ids


def _ensemble_of(models, batch, seeds):
    ensemble = Ensemble(
        [lambda ids, lengths, m=m, s=s: m.initial_state(batch, s) for m, s in zip(models, seeds)],
        [m.step for m in models],
        [{"states": 1}] * len(models),
    )
    return ensemble, ensemble.encode(None, None)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_ensemble_of_one_model_is_that_model(beam_size):
    model = ToyModel(2)
    lengths = max_output_lengths([3, 5, 8, 1], 1.5, 4)
    alone = search(
        model.step,
        model.initial_state(4, 4),
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        n_best=beam_size,
    )
    ensemble, state = _ensemble_of([model], 4, [4])
    together = search(
        ensemble.step,
        state,
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        n_best=beam_size,
        batch_axes=ensemble.batch_axes,
    )
    assert _tokens(together) == _tokens(alone)
    for a, b in zip(alone, together):
        assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-5)


@pytest.mark.parametrize("beam_size", [2, 4])
def test_ensemble_hypotheses_score_the_mean_of_their_members(beam_size):
    # Each member keeps its own state, re-indexed by the search: replaying every
    # hypothesis through each member alone gives the ensemble's score as their mean.
    models, seeds = [ToyModel(5), ToyModel(11), ToyModel(13)], [3, 6, 9]
    lengths = np.array([2, 9, 4, 6, 3])
    ensemble, state = _ensemble_of(models, len(lengths), seeds)
    assert set(state) == {f"{i}/{key}" for i in range(3) for key in ("states", "memory")}
    results = beam_search(
        ensemble.step,
        state,
        bos_id=BOS,
        eos_id=EOS,
        max_lengths=lengths,
        beam_size=beam_size,
        n_best=beam_size,
        batch_axes=ensemble.batch_axes,
    )
    singles = [
        beam_search(
            m.step, m.initial_state(len(lengths), s), bos_id=BOS, eos_id=EOS, max_lengths=lengths, beam_size=beam_size
        )
        for m, s in zip(models, seeds)
    ]
    for row, found in enumerate(results):
        assert found
        for hypothesis in found:
            tokens = hypothesis.token_ids + ([EOS] if hypothesis.finished else [])
            replayed = [_replay(m, m.initial_state(len(lengths), s), row, tokens) for m, s in zip(models, seeds)]
            assert np.mean(replayed) == pytest.approx(hypothesis.log_prob, abs=1e-4)
    # The members disagree, so the ensemble is not simply one of them.
    assert all(_tokens([r[:1] for r in results]) != _tokens(single) for single in singles)


def test_an_ensemble_refuses_members_with_different_vocabularies_or_top_k_steps():
    small = ToyModel(1)

    def wider(tokens, state):
        log_probs, updates = small.step(tokens, state)
        return np.concatenate([log_probs, np.full((len(tokens), 3), -1e9, np.float32)], axis=1), updates

    ensemble, state = _ensemble_of([small, small], 2, [1, 2])
    ensemble.steps[1] = wider
    with pytest.raises(ValueError, match="member 1: log-probabilities of shape"):
        ensemble.step(np.full(2, BOS, np.int32), state)
    ensemble.steps[1] = lambda tokens, state: ((np.zeros((2, 4)), np.zeros((2, 4), np.int32)), {})
    with pytest.raises(ValueError, match="member 1: its step returned a top-k selection"):
        ensemble.step(np.full(2, BOS, np.int32), state)
    with pytest.raises(ValueError, match="one encoder per step function"):
        Ensemble([], [small.step])
