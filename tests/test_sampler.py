"""Each sampling rule against its formula, on hand-made logits."""

import math

import pytest
import torch

from lucid.errors import SamplingParamsError
from lucid.layers import sampler as S
from lucid.sampling_params import SamplingParams

LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])


def tensors(**overrides) -> S.SamplingTensors:
    b = overrides.pop("rows", 1)
    base = dict(
        temperature=torch.ones(b), top_k=torch.zeros(b, dtype=torch.long), top_p=torch.ones(b), min_p=torch.zeros(b),
        repetition_penalty=torch.ones(b), presence_penalty=torch.zeros(b), frequency_penalty=torch.zeros(b),
        output_counts=None, seen_mask=None, bias=None, generators=[None] * b, all_greedy=False, num_top_logprobs=-1,
    )
    base.update(overrides)
    return S.SamplingTensors(**base)


def kept(logits: torch.Tensor) -> list[int]:
    return [i for i, v in enumerate(logits[0].tolist()) if v != float("-inf")]


def test_top_k_keeps_the_k_largest():
    assert kept(S.apply_top_k(LOGITS, torch.tensor([2]))) == [0, 4]
    assert kept(S.apply_top_k(LOGITS, torch.tensor([0]))) == [0, 1, 2, 3, 4]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = LOGITS.softmax(-1)[0].tolist()          # order by prob: 4, 0, 1, 2, 3
    p_top = probs[4]
    assert kept(S.apply_top_p(LOGITS, torch.tensor([p_top - 1e-3]))) == [4]
    assert kept(S.apply_top_p(LOGITS, torch.tensor([p_top + 1e-3]))) == [0, 4]
    assert kept(S.apply_top_p(LOGITS, torch.tensor([1.0]))) == [0, 1, 2, 3, 4]


def test_min_p_drops_tokens_below_fraction_of_top():
    probs = LOGITS.softmax(-1)[0]
    threshold = 0.3
    expected = [i for i in range(5) if probs[i] >= threshold * probs.max()]
    assert kept(S.apply_min_p(LOGITS, torch.tensor([threshold]))) == expected


def test_repetition_penalty_divides_positive_multiplies_negative():
    seen = torch.tensor([[True, False, False, True, False]])
    out = S.apply_repetition_penalty(LOGITS, seen, torch.tensor([2.0]))
    assert out[0].tolist() == [1.0, 1.0, 0.5, -2.0, 3.0]


def test_presence_and_frequency_follow_openai_formula():
    counts = torch.tensor([[3.0, 0.0, 1.0, 0.0, 0.0]])
    out = S.apply_presence_frequency(LOGITS, counts, torch.tensor([0.5]), torch.tensor([0.25]))
    expected = [2.0 - 0.75 - 0.5, 1.0, 0.5 - 0.25 - 0.5, -1.0, 3.0]
    assert out[0].tolist() == pytest.approx(expected)


def test_logit_bias_adds_and_greedy_takes_processed_argmax():
    bias = torch.tensor([[0.0, 5.0, 0.0, 0.0, 0.0]])
    t = tensors(temperature=torch.zeros(1), bias=bias, all_greedy=True)
    assert S.sample(LOGITS, t).tolist() == [1]
    assert S.sample(LOGITS, tensors(temperature=torch.zeros(1), all_greedy=True)).tolist() == [4]


def test_temperature_scales_before_softmax():
    t = tensors(temperature=torch.tensor([0.5]))
    probs = S.sampling_probs(LOGITS, t)
    assert probs[0].tolist() == pytest.approx((LOGITS / 0.5).softmax(-1)[0].tolist())


def test_draw_matches_distribution_and_seed_is_reproducible():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    g = torch.Generator().manual_seed(0)
    draws = [int(S.draw(probs, [g])) for _ in range(4000)]
    freq = [draws.count(i) / len(draws) for i in range(3)]
    assert freq == pytest.approx([0.1, 0.6, 0.3], abs=0.03)
    a = [int(S.draw(probs, [torch.Generator().manual_seed(5)])) for _ in range(3)]
    b = [int(S.draw(probs, [torch.Generator().manual_seed(5)])) for _ in range(3)]
    assert a == b


def test_mixed_batch_greedy_rows_stay_greedy():
    logits = LOGITS.repeat(2, 1)
    t = tensors(rows=2, temperature=torch.tensor([0.0, 1.0]), top_k=torch.tensor([0, 1]))
    assert S.sample(logits, t).tolist() == [4, 4]


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2),
    ("min_p", 1.5), ("presence_penalty", 3.0), ("frequency_penalty", -2.5), ("repetition_penalty", 0.0),
    ("n", 0), ("n", 1000), ("max_tokens", 0), ("logprobs", 21), ("seed", 2**64), ("stop", [""]),
    ("stop", ["x"] * 17), ("logit_bias", {1: 200.0}),
])
def test_sampling_params_reject_out_of_range(field, value):
    with pytest.raises(SamplingParamsError) as info:
        SamplingParams(**{field: value})
    assert info.value.param == field


def test_defaults_come_from_generation_config_else_openai():
    p = SamplingParams().with_defaults({"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05})
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.7, 0.8, 20, 1.05)
    p = SamplingParams(temperature=0.2).with_defaults({})
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.2, 1.0, 0, 1.0)
    assert math.isclose(SamplingParams().with_defaults(None).temperature, 1.0)


def test_vocab_bounds_checked():
    with pytest.raises(SamplingParamsError):
        SamplingParams(stop_token_ids=[999]).validate(vocab_size=100)
