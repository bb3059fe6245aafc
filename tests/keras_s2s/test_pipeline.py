import numpy as np

from keras_s2s.config import BOS_ID, EOS_ID
from keras_s2s.data.pipeline import bucket_plan, make_dataset, padding_share
from serving.batching import pad_sources


def _corpus(count=300, seed=0):
    rng = np.random.default_rng(seed)
    sources = [list(rng.integers(4, 30, rng.integers(1, 25))) for _ in range(count)]
    targets = [list(rng.integers(4, 30, rng.integers(1, 25))) for _ in range(count)]
    return sources, targets


def test_reversal_reverses_real_tokens_and_keeps_padding_right():
    sources = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    targets = [[4], [4, 4], [4, 4, 4]]
    dataset = make_dataset(sources, targets, token_budget=100, max_batch_size=3, bucketing=False, shuffle=False)
    inputs, target_ids, mask = next(iter(dataset))
    np.testing.assert_array_equal(inputs["source_ids"].numpy(), [[7, 6, 5, 0], [9, 8, 0, 0], [13, 12, 11, 10]])
    assert inputs["decoder_input_ids"].numpy()[0].tolist() == [BOS_ID, 4, 0, 0]
    assert target_ids.numpy()[0].tolist() == [4, EOS_ID, 0, 0]
    assert mask.numpy()[1].tolist() == [1, 1, 1, 0]
    ids, lengths = pad_sources(sources, reverse=True)
    np.testing.assert_array_equal(ids, inputs["source_ids"].numpy())
    assert lengths.tolist() == [3, 2, 4]


def test_no_reversal_when_off():
    dataset = make_dataset(
        [[5, 6, 7]], [[4]], token_budget=100, max_batch_size=1, reverse_source=False, bucketing=False, shuffle=False
    )
    inputs, _, _ = next(iter(dataset))
    assert inputs["source_ids"].numpy().tolist() == [[5, 6, 7]]


def test_buckets_respect_the_token_budget_and_keep_every_sentence():
    sources, targets = _corpus()
    budget = 120
    dataset = make_dataset(sources, targets, token_budget=budget, max_batch_size=64, seed=3)
    seen = 0
    for inputs, target_ids, _ in dataset:
        batch, width = inputs["source_ids"].shape
        assert batch * max(width, target_ids.shape[1]) <= budget
        seen += batch
    assert seen == len(sources)


def test_repeated_dataset_passes_over_every_sentence_once_per_epoch_reshuffled():
    sources, targets = _corpus()
    options = dict(token_budget=120, max_batch_size=64, seed=3)
    batches = padding_share(make_dataset(sources, targets, **options))["batches"]
    iterator = iter(make_dataset(sources, targets, repeat=True, **options))
    passes = []
    for _ in range(3):
        seen = []
        for _ in range(batches):
            inputs, _, _ = next(iterator)
            seen += [tuple(row[row > 0]) for row in inputs["source_ids"].numpy()]
        passes.append(seen)
    expected = sorted(tuple(reversed(s)) for s in sources)
    assert all(sorted(seen) == expected for seen in passes)
    assert passes[0] != passes[1] != passes[2]


def test_bucket_plan_sizes_follow_the_budget():
    boundaries, sizes = bucket_plan(max_length=50, token_budget=1000, max_batch_size=100)
    assert len(sizes) == len(boundaries) + 1
    uppers = [b - 1 for b in boundaries] + [50]
    assert all(size * upper <= 1000 or size == 1 for size, upper in zip(sizes, uppers))
    assert sizes[0] == 100  # short sentences hit the sentence cap


def test_bucketing_pads_less_than_plain_batches():
    sources, targets = _corpus(600)
    bucketed = padding_share(make_dataset(sources, targets, token_budget=800, max_batch_size=64))
    plain = padding_share(make_dataset(sources, targets, token_budget=800, max_batch_size=64, bucketing=False))
    assert bucketed["sentences"] == plain["sentences"] == 600
    assert bucketed["real_tokens"] == plain["real_tokens"] == sum(len(s) + len(t) + 1 for s, t in zip(sources, targets))
    assert bucketed["padding_share"] < plain["padding_share"]
