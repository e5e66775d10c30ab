"""Training on several processes: pipeline-parallel GLEAM over torch.distributed (launched by torchrun)."""
