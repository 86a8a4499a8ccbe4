import pytest

from tts.engine import SamplingParams
from tts.engine.backend import MAX_STOPS
from tts.errors import TTSError


def test_defaults_follow_vllm():
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (1.0, 1.0, -1, 0.0)
    assert params.n == 1 and params.seed is None and params.logprobs is None


def test_stop_list_becomes_hashable_tuple():
    params = SamplingParams(stop=["\n\n", "END"])
    assert params.stop == ("\n\n", "END")
    assert hash(params) == hash(SamplingParams(stop=("\n\n", "END")))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n must be"),
        ({"logprobs": -1}, "logprobs"),
        ({"prompt_logprobs": -1}, "prompt_logprobs"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_params_are_refused_with_their_name(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**bad)


@pytest.mark.parametrize("seed", [-(2**63), 0, 2**63 - 1])
def test_seeds_of_64_bits_are_taken(seed):
    assert SamplingParams(seed=seed, n=4).seed == seed


@pytest.mark.parametrize("seed", [2**63, 2**70, -(2**63) - 1])
def test_seeds_beyond_64_bits_are_bad_input(seed):
    with pytest.raises(TTSError, match=r"seed must be in \[-9223372036854775808, "):
        SamplingParams(seed=seed)


def test_stop_lists_beyond_the_limit_are_bad_input() -> None:
    SamplingParams(stop=["x"] * MAX_STOPS, stop_token_ids=list(range(MAX_STOPS)))
    for field, value in (
        ("stop", ["x"] * (MAX_STOPS + 1)),
        ("stop_token_ids", [1] * (MAX_STOPS + 1)),
    ):
        with pytest.raises(TTSError, match=f"{field} has {MAX_STOPS + 1} entries"):
            SamplingParams(**{field: value})
