"""The native engine: paged KV cache, prefix cache, continuous batching (see engine.py).

Files, in the order a request meets them: `engine.py` (async front and step loop),
`scheduler.py` (who computes what each step), `sequence.py` (one sample's state),
`prefix_cache.py` and `block_pool.py` (KV blocks and their reuse), `model_runner.py` and
`model.py` (the only code that touches the device), `sampler.py` (next tokens).
"""
