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


# ---- the fast path against the dense formulas, and the draw against its distribution ---------------------------
def reference_probs(logits: torch.Tensor, t: S.SamplingTensors) -> torch.Tensor:
    """The rules composed on dense logits exactly as their formulas read: T, top-k, top-p, min-p, softmax."""
    scaled = logits / torch.where(t.temperature > 0, t.temperature, 1.0).unsqueeze(1)
    scaled = S.apply_min_p(S.apply_top_p(S.apply_top_k(scaled, t.top_k), t.top_p), t.min_p)
    return scaled.softmax(dim=-1)


def chi_square_critical(df: int, z: float = 4.265) -> float:
    """Upper quantile of chi-square(df) by Wilson-Hilferty; z = 4.265 is the normal's 1 - 1e-5 quantile."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def chi_square(draws: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic of draws against probs, bins with an expected count under 5 pooled; (stat, df)."""
    n = draws.numel()
    observed = torch.bincount(draws, minlength=probs.numel()).double()
    expected = probs.double() * n
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


PARAM_CASES = [  # temperature, top_k, top_p, min_p per row
    ([0.7, 1.0, 1.3], [0, 0, 0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
    ([0.7, 1.0, 1.3], [5, 40, 1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
    ([0.7, 1.0, 1.3], [20, 50, 3], [0.8, 0.95, 0.5], [0.0, 0.1, 0.0]),
    ([0.7, 1.0, 1.3], [0, 10, 0], [0.9, 1.0, 0.6], [0.05, 0.0, 0.2]),   # mixed: some rows without top-k
    ([1.0, 0.5, 2.0], [0, 0, 0], [0.999, 0.5, 0.97], [0.0, 0.0, 0.0]),  # a nucleus wider than NUCLEUS_FIRST
    ([1.0, 0.5, 2.0], [0, 30, 0], [0.01, 0.01, 1.0], [0.0, 0.0, 0.9]),   # nuclei of one token, a strict min-p
    ([0.7, 1.0, 1.3], [0, 0, 0], [0.9, 1.0, 0.95], [0.0, 0.001, 0.05]),  # no top-k, every row restricted: candidates
]


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", PARAM_CASES)
def test_sampling_probs_equal_the_dense_formulas(temperature, top_k, top_p, min_p):
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1)) * 2.5
    t = tensors(rows=3, temperature=torch.tensor(temperature), top_k=torch.tensor(top_k),
                top_p=torch.tensor(top_p), min_p=torch.tensor(min_p))
    fast, reference = S.sampling_probs(logits, t), reference_probs(logits, t)
    assert torch.equal(fast > 0, reference > 0)                       # the same tokens are kept
    assert torch.allclose(fast, reference, atol=1e-6, rtol=1e-4)


def test_top_k_is_a_partial_selection_then_candidates():
    logits = torch.randn(2, 500, generator=torch.Generator().manual_seed(2))
    t = tensors(rows=2, top_k=torch.tensor([7, 3]), top_p=torch.tensor([0.9, 1.0]))
    c = S.sampling_candidates(logits, t)
    assert c.ids is not None and c.ids.shape == (2, 7)               # only the k best reach top-p/min-p
    assert set(c.ids[1, :3].tolist()) == set(logits[1].topk(3).indices.tolist())
    assert c.weights[1, 3:].eq(0).all()


@pytest.mark.parametrize("n", [3, 1000, 151_936 // 64])
def test_inverse_cdf_draw_follows_its_distribution(n):
    g = torch.Generator().manual_seed(n)
    probs = torch.rand(n, generator=g) ** 4
    probs[torch.randperm(n, generator=g)[: n // 3]] = 0.0              # some zeros that must never be drawn
    probs /= probs.sum()
    rows = 20_000
    torch.manual_seed(n)
    draws = S.draw(probs.expand(rows, n).contiguous(), [None] * rows)
    assert probs[draws].gt(0).all()
    stat, df = chi_square(draws, probs)
    assert stat < chi_square_critical(df), (stat, df)


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", [(0.8, 0, 1.0, 0.0), (1.2, 50, 0.9, 0.02),
                                                           (1.0, 0, 0.7, 0.0), (0.6, 0, 1.0, 0.1)])
def test_chi_square_of_the_draw_on_the_tiny_model(temperature, top_k, top_p, min_p):
    from tests.engine_fixtures import tiny_model

    with torch.inference_mode():
        logits = tiny_model()(torch.tensor([[3, 4, 5, 6]]))[:, -1, :]    # (1, 128)
    rows = 4_000
    t = tensors(rows=rows, temperature=torch.full((rows,), temperature), top_k=torch.full((rows,), top_k),
                top_p=torch.full((rows,), top_p), min_p=torch.full((rows,), min_p))
    probs = S.sampling_probs(logits, tensors(temperature=torch.tensor([temperature]), top_k=torch.tensor([top_k]),
                                             top_p=torch.tensor([top_p]), min_p=torch.tensor([min_p])))[0]
    torch.manual_seed(0)
    draws = torch.cat([S.sample(logits.expand(rows, -1).contiguous(), t) for _ in range(5)])
    assert probs[draws].gt(0).all()                                   # nothing outside the kept set
    stat, df = chi_square(draws, probs)
    assert df > 3 and stat < chi_square_critical(df), (stat, df)


def test_a_seeded_row_draws_the_same_whatever_the_batch():
    logits = torch.randn(4, 2000, generator=torch.Generator().manual_seed(3))
    own = dict(temperature=1.0, top_k=5, top_p=0.9, min_p=0.0)
    for seed in range(20):
        alone = S.sample(logits[:1], tensors(temperature=torch.tensor([own["temperature"]]),
                                             top_k=torch.tensor([own["top_k"]]), top_p=torch.tensor([own["top_p"]]),
                                             generators=[torch.Generator().manual_seed(seed)]))
        # Neighbours that are greedy, unseeded and without a top-k send the batch down other paths.
        batched = S.sample(logits, tensors(
            rows=4, temperature=torch.tensor([1.0, 0.0, 0.7, 1.5]), top_k=torch.tensor([5, 0, 0, 3]),
            top_p=torch.tensor([0.9, 1.0, 0.8, 1.0]), min_p=torch.tensor([0.0, 0.0, 0.1, 0.0]),
            generators=[torch.Generator().manual_seed(seed), None, None, torch.Generator().manual_seed(99)]))
        assert batched[0] == alone[0]
        assert batched[1] == logits[1].argmax()


def test_top_p_and_min_p_without_top_k_select_candidates_only():
    """A batch whose every row top-p or min-p restricts never builds vocabulary-sized weights: its candidates are the
    best tokens, as many as the rules can keep (grown past NUCLEUS_FIRST for a wide min-p)."""
    logits = torch.randn(2, 5000, generator=torch.Generator().manual_seed(4)) * 3
    t = tensors(rows=2, top_p=torch.tensor([0.5, 1.0]), min_p=torch.tensor([0.0, 0.01]))
    c = S.sampling_candidates(logits, t)
    assert c.ids is not None and S.NUCLEUS_FIRST < c.ids.shape[1] < 5000
    kept_by_min_p = int((logits[1].softmax(-1) >= 0.01 * logits[1].softmax(-1).max()).sum())
    assert int(c.weights[1].gt(0).sum()) == kept_by_min_p


def test_a_seeded_top_p_row_draws_the_same_alone_and_in_a_mixed_batch():
    logits = torch.randn(3, 3000, generator=torch.Generator().manual_seed(5))
    for seed in range(20):
        own = torch.Generator().manual_seed(seed)
        alone = S.sample(logits[:1], tensors(top_p=torch.tensor([0.9]), generators=[own]))
        batched = S.sample(logits, tensors(   # a neighbour without top-p or min-p sends the batch down the dense path
            rows=3, temperature=torch.tensor([1.0, 0.8, 0.0]), top_p=torch.tensor([0.9, 1.0, 1.0]),
            generators=[torch.Generator().manual_seed(seed), None, None]))
        assert batched[0] == alone[0]


def test_one_uniform_per_row_from_its_own_generator():
    seeded = torch.Generator().manual_seed(11)
    u = S.uniforms([None, seeded, None], torch.device("cpu"))
    assert u.shape == (3,) and bool(((u >= 0) & (u < 1)).all())
    assert u[1] == torch.rand(1, generator=torch.Generator().manual_seed(11))[0]
