"""Search requests through a real server and the official `openai` client: options held to the
server's limits, a search cut at max_search_tokens, prompts as the client sent them, and the
built-in model answering whole under reasoning_effort "high"."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import openai
import pytest

from tts.data.synthetic import eval_set
from tts.engine import load
from tts.errors import TTSError
from tts.prompts import DEFAULT_INSTRUCTION, problem_messages
from tts.search import STRATEGIES
from tts.servers import ServerConfig, create_app, load_config
from tts.servers.config import LIMITS, NO_LIMIT
from tts.verifiers import extract_answer, load_scorer

EXAMPLE = Path(__file__).parents[2] / "configs" / "server.yaml"
ASK = [{"role": "user", "content": "What is 2+2?"}]
STEP = {"max_tokens": 24, "max_step_tokens": 8, "seed": 0}
BUDGET = 40  # max_search_tokens of the budget server


def connect(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return connect(base_url)


@pytest.fixture(scope="module")
def budget_client(servers, engine, tiny_llama, tiny_prm_token) -> openai.OpenAI:
    config = ServerConfig(model=str(tiny_llama), served_model_name="tiny", max_search_tokens=BUDGET)
    scorer = load_scorer(tiny_prm_token, device="cpu")
    return connect(servers.start(create_app(engine, scorer, config)))


@pytest.fixture(scope="module")
def builtin_client(servers) -> openai.OpenAI:
    """`tts serve --model builtin --config configs/server.yaml`, as a user starts it."""
    config = load_config(EXAMPLE, model="builtin")
    backend = load("builtin", device="cpu", block_size=16)
    return connect(servers.start(create_app(backend, load_scorer("builtin"), config)))


def search(client: openai.OpenAI, options: dict, messages: list = ASK, **fields):
    return client.chat.completions.create(
        model="tiny", messages=messages, extra_body={"tts": options}, **fields
    )


# Each over the base server's limits: max_n 16, max_tokens_limit 4000, max_steps_limit 256.
OVER = {
    "n": {"strategy": "majority", "n": 17},
    "simulations": {"strategy": "mcts", "n": 1, "simulations": 17},
    "expand_k": {"strategy": "mcts", "n": 1, "expand_k": 100_000},
    "concurrency": {"strategy": "mcts", "n": 1, "concurrency": 10**6},
    "max_tokens": {"strategy": "majority", "max_tokens": 4001},
    "max_step_tokens": {"strategy": "beam", "n": 4, "beam_width": 2, "max_step_tokens": 10**5},
    "max_steps": {"strategy": "dvts", "n": 4, "beam_width": 2, "max_steps": 257},
    "token_budget": {"strategy": "majority", "token_budget": 65537},
}


@pytest.mark.parametrize("option", list(OVER))
def test_an_option_over_its_server_limit_is_refused_by_name(client, option):
    with pytest.raises(openai.BadRequestError) as refused:
        search(client, OVER[option])
    assert refused.value.param == f"tts.{option}"
    assert f"tts.{option} is {OVER[option][option]}" in refused.value.message


@pytest.mark.parametrize("stage", ["probe", "hard"])
def test_the_options_of_autos_strategies_are_held_to_the_same_limits(client, stage):
    strategy = {"probe": "probe_with", "hard": "hard"}[stage]
    options = {"strategy": "auto", "n": 8, strategy: "mcts"}
    options[f"{stage}_options"] = {"expand_k": 10**5}
    with pytest.raises(openai.BadRequestError) as refused:
        search(client, options)
    assert refused.value.param == f"tts.{stage}_options.expand_k"
    assert f"tts.{stage}_options.expand_k is 100000" in refused.value.message


def test_every_option_that_multiplies_work_has_a_limit():
    # A new integer option of a strategy must be given a limit (or be declared harmless).
    for _, config in STRATEGIES.values():
        counts = {
            name
            for name, field in config.model_fields.items()
            if field.annotation is int or int in get_args(field.annotation)
        }
        assert counts and counts <= set(LIMITS) | set(NO_LIMIT), config.__name__
    assert all(name in ServerConfig.model_fields for name in LIMITS.values())


@pytest.mark.parametrize(
    "options, name, param",
    [
        ({"strategy": "mcts", "expand_kk": 2}, "expand_kk", "tts"),
        ({"strategy": "majority", "beam_width": 2}, "beam_width", "tts"),
        ({"strategy": "telepathy"}, "telepathy", "tts"),
        ({"instruction": "Think hard."}, "tts.instruction", "tts.instruction"),
    ],
)
def test_an_unknown_or_unusable_option_is_refused_by_name(client, options, name, param):
    with pytest.raises(openai.BadRequestError, match=name) as refused:
        search(client, options)
    assert refused.value.param == param


@pytest.mark.parametrize(
    "preset, name",
    [
        ({"strategy": "mcts", "options": {"expand_k": 1000}}, "expand_k"),
        ({"strategy": "beam", "options": {"beam_w": 2}}, "beam_w"),
        ({"strategy": "majority", "options": {"instruction": "Think."}}, "instruction"),
    ],
)
def test_a_bad_preset_stops_the_server_from_starting(preset, name):
    with pytest.raises(TTSError, match=name):
        load_config(None, reasoning_effort={"high": preset})


CUT = {
    "majority": {"strategy": "majority", "n": 4, "max_tokens": 24},
    "beam": {"strategy": "beam", "n": 4, "beam_width": 2, **STEP},
    "mcts": {"strategy": "mcts", "n": 8, "expand_k": 4, "concurrency": 4, **STEP},
}


@pytest.mark.parametrize("name", list(CUT))
def test_a_search_stops_at_max_search_tokens_and_says_so(budget_client, name):
    # Each would generate about 100 tokens or more with the random model, which never stops.
    reply = search(budget_client, CUT[name])
    assert reply.model_extra["tts"]["stopped"] == "budget"
    assert reply.choices[0].finish_reason == "length"
    assert 0 < reply.usage.completion_tokens <= BUDGET  # exact: no overshoot


def test_a_streamed_search_stops_at_the_budget_too(budget_client):
    stream = budget_client.chat.completions.create(
        model="tiny",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"tts": CUT["beam"]},
    )
    chunks = list(stream)
    last = next(c for c in reversed(chunks) if c.choices)
    assert last.choices[0].finish_reason == "length"
    assert last.model_extra["tts"]["stopped"] == "budget"
    assert chunks[-1].usage.completion_tokens <= BUDGET


def test_a_search_within_the_budget_runs_its_course(client):
    reply = search(client, {"strategy": "majority", "n": 2, "max_tokens": 8})
    assert reply.model_extra["tts"]["stopped"] is None
    assert reply.usage.completion_tokens <= 16


CONVERSATION = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "What is 1+1?"},
    {"role": "assistant", "content": "The answer is \\boxed{2}."},
    *ASK,
]


def test_a_chat_search_is_prompted_with_every_message_as_sent(client):
    def prompt_tokens(messages: list, **tts) -> int:
        if tts:
            reply = search(client, tts, messages, max_tokens=2)
        else:
            reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
        return reply.usage.prompt_tokens

    majority = {"strategy": "majority", "n": 1}
    beam = {"strategy": "beam", "n": 1, "beam_width": 1}  # its first step's prompt
    plain = prompt_tokens(CONVERSATION)
    assert plain > prompt_tokens(ASK)  # the system message and earlier turns are there
    assert prompt_tokens(CONVERSATION, **majority) == plain
    assert prompt_tokens(CONVERSATION, **beam) == plain


def test_a_posed_problem_gets_its_instruction_once(client):
    # What `tts data synth` and `tts data reject` write, as lm-eval would send it back.
    posed = problem_messages("What is 2+2?")
    assert posed[0]["content"].count(DEFAULT_INSTRUCTION) == 1
    plain = client.chat.completions.create(model="tiny", messages=posed, max_tokens=2)
    reply = search(client, {"strategy": "majority", "n": 1}, posed, max_tokens=2)
    assert reply.usage.prompt_tokens == plain.usage.prompt_tokens


def test_builtin_high_effort_answers_whole_or_says_it_was_cut(builtin_client):
    # reasoning_effort "high" of configs/server.yaml: auto with the built-in PRM (n kept small
    # for time). Cut solutions once came back as finish_reason "stop".
    problem = eval_set("arith", 1)[0]
    ask = dict(model="builtin", messages=problem_messages(problem.problem), seed=0)
    ask |= dict(reasoning_effort="high", extra_body={"tts": {"n": 3, "probe": 2}})
    whole = builtin_client.chat.completions.create(**ask)
    content = whole.choices[0].message.content
    assert whole.model_extra["tts"]["strategy"] == "auto"
    assert extract_answer(content) is not None and content.rstrip().endswith("}.")
    assert whole.model_extra["tts"]["answer"] == extract_answer(content)
    assert whole.choices[0].finish_reason == "stop"
    cut = builtin_client.chat.completions.create(**ask, max_tokens=12)
    assert extract_answer(cut.choices[0].message.content) is None
    assert cut.choices[0].finish_reason == "length"
    assert all(c["finish_reason"] == "length" for c in cut.model_extra["tts"]["candidates"])
