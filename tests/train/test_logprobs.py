"""Chunked completion log-probabilities (`tts.train.logprobs`) against the plain log-softmax
over the full logits: values, entropy and gradients, for chunk sizes that divide nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, PreTrainedModel

from tts.models.tiny import build_tiny_model
from tts.train.logprobs import token_logprobs

TEMPERATURE = 0.7
PAD = 0
# (token_chunk, vocab_chunk): one chunk; positions only; both, neither dividing its size.
CHUNKS = [(None, 32768), (7, 32768), (None, 100), (5, 97), (1, 1000)]


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), family="qwen3")


def sequences(vocab: int) -> tuple[list[list[int]], list[int]]:
    """Three sequences of different lengths (so two are padded) and completion starts."""
    generator = torch.Generator().manual_seed(0)
    lengths, starts = [23, 9, 16], [5, 2, 11]
    batch = [torch.randint(1, vocab, (n,), generator=generator).tolist() for n in lengths]
    return batch, starts


def plain_logprobs(
    model: PreTrainedModel, batch: list[list[int]], starts: list[int]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The reference: log-softmax over the whole batch's logits at once."""
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), PAD)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(batch), width - 1))
    for row, (seq, start) in enumerate(zip(batch, starts)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        mask[row, start - 1 : len(seq) - 1] = 1
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits / TEMPERATURE, dim=-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1).detach()
    chosen = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return chosen, mask, float((entropy * mask).sum() / mask.sum())


def values_and_grads(
    model: PreTrainedModel, compute, batch: list[list[int]], starts: list[int]
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, torch.Tensor]]:
    """`compute`'s log-probabilities, mask and entropy, and the gradients of a weighted sum of
    the completion log-probabilities (weights of both signs, as advantages are)."""
    model.zero_grad(set_to_none=True)
    chosen, mask, entropy = compute(model, batch, starts)
    weights = torch.linspace(-1.0, 2.0, chosen.numel()).view(chosen.shape)
    (chosen * mask * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return chosen.detach(), mask, entropy, grads


def chunked(token_chunk: int | None, vocab_chunk: int):
    def compute(model: PreTrainedModel, batch: list[list[int]], starts: list[int]):
        return token_logprobs(
            model,
            batch,
            starts,
            PAD,
            TEMPERATURE,
            token_chunk=token_chunk,
            vocab_chunk=vocab_chunk,
        )

    return compute


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen", "tiny_qwen3"])
@pytest.mark.parametrize(("token_chunk", "vocab_chunk"), CHUNKS)
def test_chunked_log_probabilities_entropy_and_gradients_equal_the_full_logits(
    family: str, token_chunk: int | None, vocab_chunk: int, request: pytest.FixtureRequest
):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(family))
    batch, starts = sequences(model.config.vocab_size)
    assert model.config.vocab_size % vocab_chunk != 0 or vocab_chunk > model.config.vocab_size
    want, want_mask, want_entropy, want_grads = values_and_grads(
        model, plain_logprobs, batch, starts
    )
    got, mask, entropy, grads = values_and_grads(
        model, chunked(token_chunk, vocab_chunk), batch, starts
    )
    assert torch.equal(mask, want_mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert entropy == pytest.approx(want_entropy, rel=1e-5)
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():  # the old-policy and reference pass: no checkpointing, same numbers
        again, _, again_entropy = chunked(token_chunk, vocab_chunk)(model, batch, starts)
    torch.testing.assert_close(again, got, rtol=1e-6, atol=1e-6)
    assert again_entropy == pytest.approx(entropy, rel=1e-6)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen"])
def test_one_chunk_is_the_full_log_softmax_bit_for_bit(family: str, request: pytest.FixtureRequest):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(family))
    batch, starts = sequences(model.config.vocab_size)
    want, _, want_entropy, want_grads = values_and_grads(model, plain_logprobs, batch, starts)
    got, _, entropy, grads = values_and_grads(model, chunked(None, 32768), batch, starts)
    assert torch.equal(got, want) and entropy == want_entropy
    assert all(torch.equal(grad, want_grads[name]) for name, grad in grads.items())


def test_a_family_with_soft_capped_logits_is_chunked_over_its_own_logits():
    config = Gemma2Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=5.0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    batch, starts = sequences(config.vocab_size)
    want, _, want_entropy, want_grads = values_and_grads(model, plain_logprobs, batch, starts)
    got, _, entropy, grads = values_and_grads(model, chunked(4, 64), batch, starts)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert entropy == pytest.approx(want_entropy, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_no_logits_of_more_positions_than_a_chunk_are_kept_for_the_backward_pass(tiny_qwen):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen)
    vocab = model.config.vocab_size
    batch, starts = sequences(vocab)
    saved: list[torch.Size] = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        chunked(5, 97)(model, batch, starts)
    assert saved and not [shape for shape in saved if shape[-1] in (97, vocab % 97, vocab)]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        plain_logprobs(model, batch, starts)
    assert [shape for shape in saved if shape[-1] == vocab]  # the check sees the full logits
