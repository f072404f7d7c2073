"""Hosted access: the model worker's side (engines, the worker process, its HTTP server).

Nothing here imports torch at module level: the core install (no `serve` extra) imports the
CLI, which names `escrow model-worker`; the engine imports torch only when a model is loaded.
"""
