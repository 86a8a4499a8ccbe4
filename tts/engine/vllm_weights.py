"""What tts adds to vLLM's workers: taking new weights from an RL trainer.

vLLM mixes this class into each of its worker processes (`worker_extension_cls`), so
`AsyncLLM.collective_rpc("load_tts_weights", ...)` runs it where the model lives. The weights
travel as one safetensors blob (`safetensors.torch.save`): vLLM's RPC carries bytes as they
are, while tensors nested in its arguments arrive as lists, and safetensors unpickles nothing.
The worker's own `reload_weights` then maps Hugging Face names onto vLLM's fused layers (q/k/v
into one projection, gate and up into one) and redoes what vLLM does after loading a checkpoint
(on CPU it repacks the linear layers, whose loaded parameters are then empty). This module must
import without vLLM's heavy parts: vLLM imports it by name in every worker.
"""

from __future__ import annotations

from safetensors.torch import load


class WeightLoader:
    """Mixed into vLLM's `Worker`, whose `reload_weights` it calls."""

    def load_tts_weights(self, blob: bytes) -> None:
        """Copy the weights of a safetensors blob (Hugging Face names) into the worker's
        model."""
        self.reload_weights(weights_iterator=iter(load(blob).items()))
