"""Training strategies (e2e, checkpoint, invertible/MEL, gleam) and memory measurement, in plain PyTorch."""
from .strategies import (STRATEGIES, Checkpointed, EndToEnd, Greedy, Invertible, Strategy, build_strategy,
                         default_optimizers, greedy_modules)

__all__ = ["STRATEGIES", "Checkpointed", "EndToEnd", "Greedy", "Invertible", "Strategy", "build_strategy",
           "default_optimizers", "greedy_modules"]
