"""How a problem is posed to a model: the instruction, the chat messages and the prompt.

Search, benchmarks, data generation, training and the server all pose problems through these,
so a model is asked at test time exactly as it was taught."""

from __future__ import annotations

from typing import Any

# The instruction Qwen2.5-Math and most open reasoning models are evaluated with.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def problem_messages(problem: str, instruction: str = DEFAULT_INSTRUCTION) -> list[dict[str, str]]:
    """The chat messages that pose a problem: what strategies prompt with and what SFT data
    trains on, so a model is asked at test time exactly as it was taught. A problem that already
    ends with the instruction (as `tts data` records pose it) does not get it twice."""
    posed = not instruction or problem.rstrip().endswith(instruction.strip())
    return [{"role": "user", "content": problem if posed else f"{problem}\n{instruction}"}]


def build_prompt(tokenizer: Any, problem: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The prompt for a problem: the model's chat template if it has one, else plain text."""
    messages = problem_messages(problem, instruction)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"Question: {messages[0]['content']}\nAnswer:"
