"""The native engine: paged KV cache, prefix cache, continuous batching (see engine_core.py).

Files, in the order a request meets them: `engine.py` (the async front and its step loop),
`engine_core.py` (the synchronous engine: add, step, abort), `config.py` (its sizes),
`scheduler.py` (who computes what each step), `sequence.py` (one sample's state),
`prefix_cache.py` and `block_pool.py` (KV blocks and their reuse), `device_step.py` (a step's
device work), `model_runner.py` and `model.py` (the model and its KV cache on the device),
`sampler.py` (next tokens), `stop.py` (when a sequence ends, and what its text shows);
speculative decoding adds `drafter.py` (draft tokens by n-gram lookup) and `speculative.py`
(which of them a step keeps).
"""
