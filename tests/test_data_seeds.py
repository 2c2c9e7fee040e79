"""fashion_tf.data.seeds: stateless per-element seeds."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

from fashion_tf.data import seeds  # noqa: E402


def element_seeds(seed, stream: int, count: int = 3) -> list[list[int]]:
    numbered, make_seed = seeds.enumerate_with_seeds(tf.data.Dataset.range(10, 10 + count), seed, stream)
    return [make_seed(index).numpy().tolist() for index, _ in numbered]


def test_each_element_of_a_stream_gets_its_own_seed_and_streams_do_not_share_seeds():
    assert element_seeds(100, seeds.EXAMPLES) == [[101, 0], [101, 1], [101, 2]]
    streams = (seeds.EXAMPLES, seeds.BATCHES, seeds.BALANCE)
    assert len({element_seeds(100, stream)[0][0] for stream in streams}) == len(streams)


def test_no_seed_draws_another_stream_each_time():
    assert element_seeds(None, seeds.EXAMPLES) != element_seeds(None, seeds.EXAMPLES)
