"""LightningModule: owns the unrolled network, the loss, the optimizers and the training strategy.

Optimisation is manual because the strategies differ in how a step is taken (GLEAM: one optimizer
per module, stepped one after another; MEL: a hand-written backward). The Trainer still owns
devices, logging, progress and checkpoints; checkpoints carry the resolved config, so a network is
rebuilt from its checkpoint alone.
"""
from __future__ import annotations


import pytorch_lightning as pl
import torch

from ..config import Config, from_dict
from ..data.kinds import get_kind
from .data_parallel import GradientAveraging, data_parallel_world
from ..evaluation.metrics import evaluate_volume, summarize
from ..evaluation.volumes import VolumeAccumulator
from ..models.build import build_network
from .guards import FiniteGuard
from .losses import build_loss
from .optim import build_optimizers
from .strategies import build_configured_strategy


class ReconModule(pl.LightningModule):
    """`owned`: build only these unrolls (a pipeline stage's, distributed/pipeline.py); default all."""

    def __init__(self, config: dict, owned: list[int] | None = None):
        super().__init__()
        self.cfg = from_dict(config)
        self.save_hyperparameters({"config": self.cfg.to_dict()})
        self.net = build_network(self.cfg, owned=owned)
        t = self.cfg.train
        self.strategy = build_configured_strategy(self.cfg, self.net)  # the registry's entry says how
        self.loss_fn = build_loss(t.loss)
        self.automatic_optimization = False
        self._val = VolumeAccumulator()

    # ---------------------------------------------------------------- inference
    def forward(self, kspace, maps, mask, num_unrolls: int | None = None):
        return self.net(kspace, maps, mask, num_unrolls=num_unrolls)

    @torch.no_grad()
    def anytime(self, kspace, maps, mask) -> dict[int, torch.Tensor]:
        """Outputs after each module (one pass through the chain)."""
        A = self.net.sense(maps, mask)
        stops = set(self.strategy.exits(self.net))
        return {k: x for k, x in self.net.iter_unrolls(A.H(kspace), A, kspace, range(self.net.num_unrolls))
                if k in stops}

    # ---------------------------------------------------------------- training
    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        """Parameters per optimizer, as the strategy groups them (GLEAM: one group per module)."""
        return self.strategy.param_groups(self.net)

    def configure_optimizers(self):
        optimizers, schedulers = build_optimizers(self.cfg.train, self.param_groups())
        return (optimizers, schedulers) if schedulers else optimizers

    def _optimizer_list(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    def training_step(self, batch, batch_idx):
        # Non-finite guard (issue 13): losses checked before backward, gradients before each optimizer step.
        guard = FiniteGuard(self.cfg.train.nonfinite, step=self.trainer.fit_loop.total_batch_idx)
        optimizers = guard.optimizers(self._optimizer_list())
        if data_parallel_world() > 1:  # train.devices > 1: average over the replicas, then check, then step
            optimizers = [GradientAveraging(o) for o in optimizers]
            # Lightning's DDP reducer expects one backward over all parameters per step (it prepares for it in
            # manual_backward). GLEAM takes one backward per module and MEL its own, so it is switched off for
            # this step and GradientAveraging does the all-reduce.
            if isinstance(self.trainer.model, torch.nn.parallel.DistributedDataParallel):
                self.trainer.model.require_backward_grad_sync = False
        losses = self.strategy.step(self.net, batch.kspace, batch.maps, batch.mask, batch.target, self.loss_fn,
                                    optimizers, backward=guard.backward(self.manual_backward))
        bs = batch.kspace.shape[0]
        main = losses.get("loss", next(iter(losses.values())))
        self.log("train/loss", main, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=bs)
        self.log_grad_norms(bs)

    def log_grad_norms(self, batch_size: int) -> None:
        """train/grad_norm (train/grad_norm_module{k} for GLEAM) before clipping, when train.grad_clip_norm is set."""
        opts = [getattr(o, "optimizer", o) for o in self._optimizer_list()]  # Lightning's wrapper -> ours
        norms = [getattr(o, "grad_norm", None) for o in opts]
        named = {"train/grad_norm" if len(opts) == 1 else f"train/grad_norm_module{k}": n
                 for k, n in enumerate(norms, start=1) if n is not None}
        if named:
            self.log_dict(named, batch_size=batch_size)

    def on_train_epoch_end(self):
        scheds = self.lr_schedulers()
        for s in (scheds if isinstance(scheds, list) else [scheds] if scheds else []):
            s.step()

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self):
        ds = self.trainer.datamodule.dataset("val") if self.trainer.datamodule else None
        self._val = VolumeAccumulator({fi.path.name: fi.recon_size for fi in ds.files} if ds else {})

    def validation_step(self, batch, batch_idx):
        outs = self.anytime(batch.kspace, batch.maps, batch.mask)
        final = outs[self.net.num_unrolls]
        self.log("val/loss", self.loss_fn(final, batch.target), batch_size=batch.kspace.shape[0])
        images = {f"module{i}": x for i, x in enumerate(outs.values(), 1)}
        images["target"] = batch.target
        self._val.add_batch(batch, images)

    def on_validation_epoch_end(self):
        vols = self._val.volumes()
        if not vols:
            return
        modules = [k for k in next(iter(vols.values())).images if k.startswith("module")]
        summaries = {int(name[len("module"):]): module_summary(vols, name, self.cfg) for name in modules}
        self.log_validation(validation_log(summaries))
        self._val.clear()

    def log_validation(self, metrics: dict[str, float]) -> None:
        """The epoch's validation metrics (val/psnr is what the best checkpoint is chosen by)."""
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("val/psnr", "val/ssim"))


def module_summary(vols: dict, name: str, cfg: Config) -> dict:
    """fastMRI metrics (mean/std over volumes) of the images stored under `name` against "target"."""
    crop = get_kind(cfg.data.kind).eval_crop
    return summarize([evaluate_volume(v.images["target"], v.images[name], crop=crop) for v in vols.values()])


def validation_log(summaries: dict[int, dict]) -> dict[str, float]:
    """What validation logs, from per-module summaries keyed by module number: val/{psnr,ssim,nmse} of the
    last module (the network's output) and, with several modules, val/<metric>_module<k> of each."""
    out: dict[str, float] = {}
    last = max(summaries)
    for k in sorted(summaries):
        for metric in ("psnr", "ssim", "nmse"):
            if k == last:
                out[f"val/{metric}"] = summaries[k][metric]["mean"]
            if len(summaries) > 1:
                out[f"val/{metric}_module{k}"] = summaries[k][metric]["mean"]
    return out


def load_module(path: str, map_location: str = "cpu") -> ReconModule:
    """Rebuild a trained module from a checkpoint, with a clear error for a foreign checkpoint."""
    from .checkpoints import load_checkpoint  # CheckpointError (a ValueError) names the file

    ckpt = load_checkpoint(path, map_location=map_location)
    module = ReconModule(ckpt["hyper_parameters"]["config"])
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path}: checkpoint does not match the architecture in its config ({first})") from None
    return module.eval()


__all__ = ["ReconModule", "load_module"]
