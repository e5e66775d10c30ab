"""LightningModule: owns the unrolled network, the loss, the optimizers and the training strategy.

Optimisation is manual because the strategies differ in how a step is taken (GLEAM: one optimizer
per module, stepped one after another; MEL: a hand-written backward). The Trainer still owns
devices, logging, progress and checkpoints; checkpoints carry the resolved config, so a network is
rebuilt from its checkpoint alone.
"""
from __future__ import annotations


import pytorch_lightning as pl
import torch

from ..config import from_dict
from ..evaluation.metrics import evaluate_volume, summarize
from ..evaluation.volumes import VolumeAccumulator
from ..models.build import build_network
from .losses import build_loss
from .strategies import build_strategy


class ReconModule(pl.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        self.cfg = from_dict(config)
        self.save_hyperparameters({"config": self.cfg.to_dict()})
        self.net = build_network(self.cfg)
        t = self.cfg.train
        strategy_cfg = dict(t.invertible) if t.strategy == "invertible" else {}
        if t.strategy == "gleam":
            strategy_cfg["num_modules"] = t.num_modules
        self.strategy = build_strategy(t.strategy, self.net, **strategy_cfg)
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
        x = A.H(kspace)
        stops, outs = set(self.strategy.exits(self.net)), {}
        for k, unroll in enumerate(self.net.unrolls, 1):
            x = unroll(x, A, kspace)
            if k in stops:
                outs[k] = x
        return outs

    # ---------------------------------------------------------------- training
    def configure_optimizers(self):
        t = self.cfg.train
        groups = self.strategy.param_groups(self.net)
        optimizers = [torch.optim.Adam(g, lr=t.lr, weight_decay=t.weight_decay) for g in groups]
        if not t.scheduler:
            return optimizers
        name = t.scheduler.get("name")
        if name == "step":
            scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=t.scheduler.get("step_size", 10),
                                                      gamma=t.scheduler.get("gamma", 0.5)) for o in optimizers]
        elif name == "cosine":
            scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t.max_epochs) for o in optimizers]
        else:
            raise ValueError(f"train.scheduler.name: unknown scheduler {name!r} (step, cosine)")
        return optimizers, scheds

    def _optimizer_list(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    def training_step(self, batch, batch_idx):
        losses = self.strategy.step(self.net, batch.kspace, batch.maps, batch.mask, batch.target, self.loss_fn,
                                    self._optimizer_list(), backward=self.manual_backward)
        bs = batch.kspace.shape[0]
        main = losses.get("loss", next(iter(losses.values())))
        self.log("train/loss", main, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=bs)

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
        crop = self.cfg.data.kind in ("knee2d", "brain2d")
        modules = [k for k in next(iter(vols.values())).images if k.startswith("module")]
        for k, name in enumerate(modules, 1):
            rows = [evaluate_volume(v.images["target"], v.images[name], crop=crop) for v in vols.values()]
            s = summarize(rows)
            last = k == len(modules)
            for metric in ("psnr", "ssim", "nmse"):
                if last:
                    self.log(f"val/{metric}", s[metric]["mean"], prog_bar=metric != "nmse")
                if len(modules) > 1:
                    self.log(f"val/{metric}_module{k}", s[metric]["mean"])
        self._val.clear()


def load_module(path: str, map_location: str = "cpu") -> ReconModule:
    """Rebuild a trained module from a checkpoint, with a clear error for a foreign checkpoint."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    cfg = ckpt.get("hyper_parameters", {}).get("config")
    if cfg is None or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an mrirecon checkpoint (no config/state_dict inside)")
    module = ReconModule(cfg)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path}: checkpoint does not match the architecture in its config ({first})") from None
    return module.eval()


__all__ = ["ReconModule", "load_module"]
