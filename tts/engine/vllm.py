"""The `vllm` backend: vLLM's async engine (`AsyncLLM`) in-process, prefix caching on.

vLLM runs the model in an engine-core process of its own (and, on CPU, a worker process under
it), which on CPU it starts with the `spawn` method: a script that loads this backend needs the
`if __name__ == "__main__":` guard. `AsyncLLM` binds its output tasks and sockets to the event
loop it first runs in, while tts callers may start several loops one after another (each
`asyncio.run`); so the engine lives in an event loop of its own on a background thread, and
`generate` hands each request over to it. Cancelling `generate` cancels the request's task
there, and `AsyncLLM.generate` aborts a cancelled request in the engine. The backend's options
become vLLM's engine config in `vllm_config.py`.

A request for n samples goes to vLLM as n requests of one sample each, sample i seeded with
seed + i, which is what vLLM itself does with n > 1 and a seed (and tts's convention); asking
one by one also allows n > 1 greedy samples (vLLM refuses them) and reports each sample's own
cached prompt tokens. vLLM's random streams are not the native engine's, so a seeded request
gives the same samples every time on this backend, but not the native backend's samples.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save
from transformers import AutoTokenizer

from tts.engine.backend import (
    Completion,
    SamplingParams,
    check_prompt_length,
    check_token_ids,
    encode_prompt,
    eos_token_ids,
    truncate_at_stop,
)
from tts.errors import TTSError

try:
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm import TokensPrompt
    from vllm.config import VllmConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.exceptions import VLLMValidationError
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from tts.engine.vllm_config import engine_config
except (ImportError, RuntimeError) as error:  # an optional extra; a torchvision that does not
    _IMPORT_ERROR: Exception | None = error  # match torch breaks vLLM's import with either
else:
    _IMPORT_ERROR = None

T = TypeVar("T")


class VLLMBackend:
    """Generate with vLLM from a Hugging Face folder.

    block_size: tokens per KV block, the prefix cache's unit (cached_tokens is a multiple of
        it); None: vLLM's default (128 on CPU, 16 on CUDA). On CPU it must be a multiple of 32.
    kv_cache_gib: memory for the KV cache, in GiB; None: 1 GiB on CPU, and on an accelerator
        what vLLM's `gpu_memory_utilization` (a share of the device memory) leaves. On CPU the
        environment variable VLLM_CPU_KVCACHE_SPACE (GiB), when set, wins: vLLM reads it last.
    max_num_seqs: most sequences running at once; None: vLLM's default.
    max_num_batched_tokens: most tokens computed in one step; None: vLLM's default. On CPU at
        least the longest sequence: prompts are prefilled in one step there, since vLLM 0.32 on
        CPU dies when a seeded prompt is split over steps.
    max_model_len: longest sequence, prompt and generation together; None: the model's.
    enforce_eager: run the model eagerly, without torch.compile or CUDA graphs: the engine
        starts sooner (a tiny model on 2 CPU cores: 35 s instead of 105 s) and steps slower.
    engine_args: any other `vllm.AsyncEngineArgs` field (tensor_parallel_size, ...).
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        block_size: int | None = None,
        kv_cache_gib: float | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        **engine_args: Any,
    ) -> None:
        if _IMPORT_ERROR is not None:
            cause = str(_IMPORT_ERROR).splitlines()[0]
            raise TTSError(f"the vllm backend needs vLLM ({cause}): pip install 'tts[vllm]'")
        vllm_args, config = engine_config(
            model_dir,
            device,
            dtype,
            block_size,
            kv_cache_gib,
            max_num_seqs,
            max_num_batched_tokens,
            max_model_len,
            enforce_eager,
            engine_args,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # EOS as tts's other backends see it (vLLM's own set adds the tokenizer's EOS to the
        # generation config's): vLLM is asked to ignore its EOS and stop at these ids instead.
        self.eos_token_ids = eos_token_ids(model_dir, self.tokenizer)
        self.max_model_len: int = config.model_config.max_model_len
        self.vocab_size: int = config.model_config.get_vocab_size()
        self._request_ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tts-vllm", daemon=True)
        self._thread.start()
        try:
            self.engine: AsyncLLM = self._run(_start_engine(vllm_args, config))
        except BaseException:
            self._stop_loop()
            raise
        # Closed at exit at the latest, while vLLM's modules are whole: AsyncLLM's own __del__
        # fails when the interpreter tears them down first.
        atexit.register(self.close)

    async def generate(self, prompt: str | list[int], params: SamplingParams) -> list[Completion]:
        if self._loop.is_closed():
            raise TTSError("the vllm backend is closed")
        prompt_ids = encode_prompt(self.tokenizer, prompt)
        check_prompt_length(len(prompt_ids), self.max_model_len)
        check_token_ids(prompt_ids, params, self.vocab_size)
        work = self._generate(prompt_ids, params)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    def update_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take new weights in every vLLM worker, by Hugging Face names (an RL trainer's
        `state_dict().items()`; `tts.engine.vllm_weights`), and drop the prefix cache, whose KV
        the old weights computed. Only between requests."""
        blob = save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors})
        self._run(self.engine.collective_rpc("load_tts_weights", args=(blob,)))
        self._run(self.engine.reset_prefix_cache())

    def close(self) -> None:
        """Shut the engine down and end its processes (else done at exit); `generate` fails
        afterwards."""
        if self._loop.is_closed():
            return
        atexit.unregister(self.close)
        self._run(self._shutdown())
        self._stop_loop()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the engine's loop and wait for it (from any thread but that one)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        self.engine.shutdown()
        del self.engine  # else AsyncLLM.__del__ runs at interpreter exit, and fails

    async def _generate(self, prompt_ids: list[int], params: SamplingParams) -> list[Completion]:
        """On the engine's loop: the n samples as n concurrent one-sample requests."""
        samples = [self._sample(prompt_ids, params, i) for i in range(params.n)]
        completions = list(await asyncio.gather(*samples))
        for completion in completions[1:]:  # only the first sample asked for them
            completion.prompt_logprobs = completions[0].prompt_logprobs
        return completions

    async def _sample(
        self, prompt_ids: list[int], params: SamplingParams, index: int
    ) -> Completion:
        request = self._vllm_params(params, index)
        final = None
        try:
            async for output in self.engine.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), request, f"tts-{next(self._request_ids)}"
            ):
                final = output
        except VLLMValidationError as error:
            raise TTSError(f"vLLM refused the request: {error}") from None
        return self._completion(final, params)

    def _vllm_params(self, params: SamplingParams, index: int) -> VLLMSamplingParams:
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)
        return VLLMSamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            stop_token_ids=sorted(stop_ids),
            ignore_eos=True,  # stop_ids holds the EOS ids that count
            seed=None if params.seed is None else params.seed + index,
            logprobs=params.logprobs,
            prompt_logprobs=params.prompt_logprobs if index == 0 else None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _completion(self, output: RequestOutput, params: SamplingParams) -> Completion:
        (sample,) = output.outputs
        if sample.finish_reason == "error":
            raise RuntimeError(f"vLLM failed request {output.request_id}")
        tokens = list(sample.token_ids)
        reason = sample.stop_reason
        if reason in self.eos_token_ids and reason not in params.stop_token_ids:
            reason = None  # an EOS, which tts (like vLLM) reports as no stop reason
        # The text decoded as the other backends decode it: vLLM leaves a stop token's text out.
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if isinstance(reason, str):
            text = truncate_at_stop(text, params.stop)[0]
        return Completion(
            text=text,
            token_ids=tokens,
            finish_reason=sample.finish_reason,
            logprobs=_logprobs(sample) if params.logprobs is not None else None,
            prompt_logprobs=_prompt_logprobs(output),
            prompt_tokens=len(output.prompt_token_ids),
            cached_tokens=output.num_cached_tokens or 0,
            stop_reason=reason,
        )


async def _start_engine(args: AsyncEngineArgs, config: VllmConfig) -> AsyncLLM:
    # Built inside the engine's loop, so that vLLM's output tasks start on it.
    return AsyncLLM.from_vllm_config(
        config,
        enable_log_requests=args.enable_log_requests,
        disable_log_stats=args.disable_log_stats,
    )


def _logprobs(sample: CompletionOutput) -> list[dict[int, float]]:
    """One {token id: logprob} per generated token, the sampled token first."""
    result = []
    for token, entry in zip(sample.token_ids, sample.logprobs):
        result.append({token: entry[token].logprob} | {t: lp.logprob for t, lp in entry.items()})
    return result


def _prompt_logprobs(output: RequestOutput) -> list[dict[int, float] | None] | None:
    """vLLM's prompt logprobs ({token id: Logprob} per position, None first) as plain floats."""
    if output.prompt_logprobs is None:
        return None
    return [
        None if entry is None else {t: lp.logprob for t, lp in entry.items()}
        for entry in output.prompt_logprobs
    ]
