"""Ways to compute a training step of the same unrolled network, one module each, registered by name:

    e2e         plain backpropagation through all unrolls (activation memory grows with N)
    checkpoint  gradient checkpointing per unroll (stores unroll inputs, recomputes each unroll once)
    invertible  memory-efficient learning: no stored activations, inputs rebuilt by inverting unrolls
    gleam       Greedy LEarning for Accelerated MRI (Ozturkler et al. 2022): N unrolls in M modules of
                N/M, each module trained on the image loss from the detached output of the previous one,
                with its own optimizer; activation memory is that of one module (gleam_pipeline: the
                same, one process per group of modules)

A new strategy: a Strategy subclass and `register_strategy(name, cls, ...)` (base.py), in any module.
"""
from .base import (Backward, LossFn, Strategy, StrategyEntry, build_configured_strategy, build_strategy,
                   default_optimizers, get_strategy, register_strategy, registered_strategies,
                   strategy_options, unique_parameters)
from .checkpoint import Checkpointed
from .e2e import EndToEnd
from .gleam import Gleam, greedy_modules, module_parameters, train_greedy_module
from .invertible import Invertible


__all__ = ["Backward", "LossFn", "Strategy", "StrategyEntry", "Checkpointed", "EndToEnd", "Gleam",
           "Invertible", "build_configured_strategy", "build_strategy", "default_optimizers",
           "get_strategy", "greedy_modules", "module_parameters", "register_strategy", "registered_strategies",
           "strategy_options", "train_greedy_module", "unique_parameters"]
