"""Training: strategies (e2e, checkpoint, invertible/MEL, gleam; one module each, registered by name), the
LightningModule, the run (run folder, checkpoints, stops) and memory measurement."""
from .strategies import (Checkpointed, EndToEnd, Gleam, Invertible, Strategy, build_strategy, default_optimizers,
                         greedy_modules, register_strategy, registered_strategies)

__all__ = ["Checkpointed", "EndToEnd", "Gleam", "Invertible", "Strategy", "build_strategy", "default_optimizers",
           "greedy_modules", "register_strategy", "registered_strategies"]
