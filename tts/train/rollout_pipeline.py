"""Where the GRPO trainer's batches come from: each step's rollouts, sampled up to
`max_staleness` policy versions ahead of the trainer.

Versions count updates: the weights after s steps are version s, and step s trains on its batch
at version s. With `max_staleness` eta = 0 (the default) the batch of step s is sampled by
version s, in the trainer's thread, once the update that made version s is in the engine: the
synchronous loop. With eta > 0 a producer thread samples the batch of step b on the rollout
workers by version max(start, b - lag), where lag is eta (eta - 1 with partial rollouts, so a
sample continued once is still no older than eta), while the trainer updates on earlier batches;
the trainer publishes each new version as it makes it, and the producer loads it into the
workers when a batch needs it (and not before: the batches in between are sampled by the older
one). AReaL's rollout controller admits new samples while their version is within eta of the
trainer's (Fu et al., 2025, Sec. 5.1); sampling each batch by a fixed version is the same bound,
made reproducible: given the seeds, an asynchronous run samples and trains the same tokens
every time, and with eta = 0 it is exactly the synchronous loop.

Evaluations run where the weights are: on the engine, right after it loads an evaluated version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tts.engine import Backend
from tts.train.distributed import ONE_PROCESS, Ranks
from tts.train.draw import ProblemDraw
from tts.train.grpo_config import GRPOConfig
from tts.train.rollout import Group, Rollout, rollout
from tts.train.rollout_worker import WorkerPool


class RolloutPipeline:
    """The batches of steps `start`.. for a trainer that publishes each version it makes."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: PreTrainedTokenizerBase,
        draw: ProblemDraw,
        config: GRPOConfig,
        start: int,
        ranks: Ranks = ONE_PROCESS,
        evaluate: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.backend, self.tokenizer, self.draw, self.config = backend, tokenizer, draw, config
        self.start, self.ranks, self.evaluate = start, ranks, evaluate
        self.success = draw.success  # the success table as of the last batch handed out
        self.evaluations: list[dict[str, float]] = []  # {"step": version, ...}, as they finish
        self.sync_seconds = 0.0  # weight sync (store and load) since the trainer last took it
        self.held = -1  # the version the engine holds
        self.carried: list[Group] = []  # partial rollouts in flight
        self._published: dict[int, Any] = {}
        self._batches: dict[int, tuple[Rollout, dict[str, float]]] = {}
        self._error: BaseException | None = None
        self._closing = False
        self._ready = threading.Condition()
        self._thread = None
        if config.max_staleness > 0:
            self._thread = threading.Thread(target=self._produce, name="tts-rollouts", daemon=True)
            self._thread.start()

    def publish(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """The trainer's weights of `version`: loaded now (synchronous), or stored for the
        producer (asynchronous; a copy, so the trainer may go on changing its own)."""
        started = time.perf_counter()
        staged = self.backend.put_weights(weights) if self._stores else weights
        with self._ready:
            self.sync_seconds += time.perf_counter() - started
            self._published[version] = staged
            self._ready.notify_all()
        if self._thread is None:
            self._load(version)

    def batch(self, step: int) -> Rollout:
        """Step `step`'s batch: sampled now (synchronous) or when the producer has it."""
        if self._thread is None:
            return rollout(self.backend, self.tokenizer, self.draw, self.config, step, self.ranks)
        with self._ready:
            self._ready.wait_for(lambda: step in self._batches or self._error is not None)
            if self._error is not None:
                raise self._error
            batch, self.success = self._batches.pop(step)
        return batch

    def take_sync_seconds(self) -> float:
        """Seconds spent moving weights since the last call."""
        with self._ready:
            seconds, self.sync_seconds = self.sync_seconds, 0.0
        return seconds

    def take_evaluations(self) -> list[dict[str, float]]:
        """The evaluations finished since the last call."""
        with self._ready:
            done, self.evaluations = self.evaluations, []
        return done

    def finish(self) -> list[dict[str, float]]:
        """Wait for the producer to load and evaluate the last version; its evaluations."""
        if self._thread is not None:
            self._thread.join()
            if self._error is not None:
                raise self._error
        return self.take_evaluations()

    def close(self) -> None:
        """Stop the producer (a trainer that failed) and the rollout workers, if any."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        if self._stores:
            self.backend.close()

    @property
    def _stores(self) -> bool:
        """Whether the backend is rollout workers, whose weights go through Ray's store."""
        return isinstance(self.backend, WorkerPool)

    def _due(self, version: int) -> bool:
        """Whether `version` is evaluated: the first of a fresh run, every `eval_every`-th and
        the last."""
        config = self.config
        if self.evaluate is None:
            return False
        if version == self.start:
            return version == 0
        return version % config.eval_every == 0 or version == config.max_steps

    def _load(self, version: int) -> None:
        """Put `version` into the engine, then evaluate it if due."""
        with self._ready:
            staged = self._published.pop(version)
            for older in [v for v in self._published if v < version]:
                del self._published[older]
        started = time.perf_counter()
        if self._stores:
            self.backend.load_weights(staged)
        else:
            self.backend.update_weights(staged.items())
        self.held = version
        with self._ready:
            self.sync_seconds += time.perf_counter() - started
        if self._due(version):
            started = time.perf_counter()
            result = {"step": version, **self.evaluate()}
            result["eval_seconds"] = time.perf_counter() - started
            with self._ready:
                self.evaluations.append(result)

    def _catch_up(self, needed: int) -> None:
        """Load `needed`, and on the way each published version that is to be evaluated."""
        for version in range(max(self.held + 1, self.start), needed + 1):
            if version != needed and not self._due(version):
                continue
            with self._ready:
                self._ready.wait_for(lambda v=version: v in self._published or self._closing)
                if self._closing:
                    raise InterruptedError("the trainer stopped")
            self._load(version)

    def _produce(self) -> None:
        config = self.config
        try:
            for step in range(self.start, config.max_steps):
                version = max(self.start, step - config.lag)
                self._catch_up(version)
                batch = rollout(
                    self.backend,
                    self.tokenizer,
                    self.draw,
                    config,
                    step,
                    version=version,
                    carried=self.carried,
                )
                with self._ready:
                    self._batches[step] = (batch, dict(self.draw.success))
                    self._ready.notify_all()
            self._catch_up(config.max_steps)
        except InterruptedError:
            return
        except BaseException as error:  # handed to the trainer at its next batch
            with self._ready:
                self._error = error
                self._ready.notify_all()
