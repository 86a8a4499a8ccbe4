import math

import pytest
import torch

from tts.engine import SamplingParams
from tts.engine.native.sampler import logprobs_of, sample

LOGITS = torch.log(torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]))


def draws(params: SamplingParams, count: int = 20000) -> torch.Tensor:
    """Empirical token frequencies over `count` rows of the same distribution."""
    generator = torch.Generator().manual_seed(0)
    tokens = sample(LOGITS.repeat(count, 1), [params] * count, [generator] * count)
    return torch.bincount(tokens, minlength=5).float() / count


def test_greedy_is_argmax_even_beside_sampled_rows():
    logits = torch.randn(4, 50)
    params = [SamplingParams(temperature=0), SamplingParams(), SamplingParams(temperature=0)] * 2
    tokens = sample(logits.repeat(2, 1)[:6], params[:6], [None] * 6)
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()


@pytest.mark.parametrize(
    "params, expected",
    [
        (SamplingParams(), [0.4, 0.3, 0.15, 0.1, 0.05]),
        (SamplingParams(top_k=2), [0.4 / 0.7, 0.3 / 0.7, 0, 0, 0]),
        # Nucleus: 0.4 + 0.3 < 0.8, so 0.15 is needed too; the rest is cut.
        (SamplingParams(top_p=0.8), [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0]),
        # min_p 0.3: keep tokens with p >= 0.3 * 0.4 = 0.12.
        (SamplingParams(min_p=0.3), [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0]),
    ],
)
def test_filters_keep_the_right_tokens_in_the_right_proportions(params, expected):
    assert torch.allclose(draws(params), torch.tensor(expected), atol=0.015)


def test_temperature_sharpens_the_distribution():
    probs = torch.softmax(LOGITS / 0.5, dim=-1)
    assert torch.allclose(draws(SamplingParams(temperature=0.5)), probs, atol=0.015)


def test_a_seeded_row_samples_the_same_whatever_else_is_in_the_batch():
    logits = torch.randn(1, 100)

    def with_neighbours(count: int) -> int:
        generators = [torch.Generator().manual_seed(42)] + [None] * count
        rows = torch.cat([logits, torch.randn(count, 100)])
        return sample(rows, [SamplingParams()] * (count + 1), generators)[0].item()

    assert len({with_neighbours(k) for k in (0, 1, 7, 31)}) == 1


def test_logprobs_are_of_the_raw_distribution():
    tokens = torch.tensor([3])
    (entry,) = logprobs_of(LOGITS.unsqueeze(0), tokens, [2])
    assert set(entry) == {3, 0, 1}
    assert math.isclose(entry[3], math.log(0.1), abs_tol=1e-6)
    assert math.isclose(entry[0], math.log(0.4), abs_tol=1e-6)
    assert logprobs_of(LOGITS.unsqueeze(0), tokens, [None]) == [None]
