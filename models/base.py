"""`SegmentationModule`: the LightningModule every architecture shares.

A subclass only declares `spatial_dims` (2: the DataModule serves axial slices, 3: patches),
`size_divisor` (inputs are padded to a multiple of it) and `build_network()`. Everything
else — loss, optimiser, per-stage metrics, whole-volume inference — lives here.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from models.checkpoint_format import describe_checkpoint
from models.network import (fast_eval_copy, liver_labels, padded_forward, plain_tensor, predict_volume,
                            windows_unlike_patch)
from models.overlap import OVERLAP_METRICS
from models.registry import missing_requirements
from models.schedules import check_schedule, lr_scheduler

LOSSES = ("ce", "dice_ce")
METRICS = tuple(OVERLAP_METRICS)  # dice, jaccard, precision, recall
# Training-time metrics are on the preprocessed grid, per batch/volume: not the benchmark's Dice
# (original geometry, benchmark.scoring.metrics), so they carry their own name: `val/dice_grid`.
GRID_SUFFIX = "_grid"
# the weight average (configure_callbacks) warns for every model that overrides configure_model; ours builds the
# network there once and shards nothing, so the warning says nothing here (set once, at import)
warnings.filterwarnings("ignore", message="You're using the WeightAveraging callback with a model that "
                        "overrides the configure_model")
MONITOR = "val/dice" + GRID_SUFFIX  # checkpoint selection


def overlap_scores(pred: torch.Tensor, target: torch.Tensor, per_sample: bool = True) -> dict[str, torch.Tensor]:
    """Dice, Jaccard, precision, recall of boolean masks (B, ...); per sample or over the batch, with the
    scoring's formulas (`models.overlap`). Both masks empty counts as perfect (1); an empty prediction
    of a non-empty mask as 0."""
    dims = tuple(range(1, pred.ndim)) if per_sample else tuple(range(pred.ndim))
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(dims).double()
    fp = (pred & ~target).sum(dims).double()
    fn = (~pred & target).sum(dims).double()
    return {name: metric(tp, fp, fn).float().reshape(-1) for name, metric in OVERLAP_METRICS.items()}


class _NotCopied(dict):
    """A per-instance cache that `copy.deepcopy` and pickling leave behind (the copy starts empty)."""

    def __deepcopy__(self, memo):
        return type(self)()

    def __reduce__(self):
        return type(self), ()


def _stage_metrics(stage: str) -> MetricCollection:
    return MetricCollection({m: MeanMetric() for m in METRICS}, prefix=f"{stage}/", postfix=GRID_SUFFIX)


class SegmentationModule(L.LightningModule):
    """Binary liver segmentation: logits `(B, num_classes, *spatial)`, class 1 = liver.

    Arguments are plain values so `save_hyperparameters()`, checkpoints, LightningCLI and
    the W&B config carry them unchanged.

    Args:
        in_channels: image channels (1 for CT/MRI).
        num_classes: output channels (2: background, liver).
        loss: "ce" (the paper's cross-entropy) or "dice_ce" (MONAI Dice + CE).
        lr, weight_decay: Adam settings (paper: lr 1e-4); with a schedule, `lr` is the peak.
        lr_schedule: "constant" (the paper's) or "onecycle" (warm-up then cosine decay over the
            trainer's max_steps: a short, fixed step budget ends at a low learning rate instead of
            stopping mid-way at a high one), or "warmup" (linear warm-up over the first 10 % of the
            trainer's length, then constant: for a convergence rule that lowers the rate on plateaus).
        warmup_steps: length of the linear warm-up of "warmup" and "onecycle" in optimizer steps; None = 10 %
            of the trainer's length. A fixed number keeps every step of a run that converges before the cap
            the same whatever the cap.
        ema_decay: keep an exponential moving average of the weights with this decay per step (Lightning's
            weight averaging); validation, the kept checkpoint and so the test use the average. None = off.
            On four real T2 patients 0.99 raised the cross-validated Dice at both seeds (docs/convergence.md).
        compile_training: run the training steps' network through `torch.compile` (inductor; validation,
            test and inference stay eager). The 2D U-Net's fp32 CPU training step took 0.80x the time in a whole
            run (its network 0.60x), the 3D U-Net's and the ResNet's no less (docs/speed.md); compiling costs
            about a minute per run and, on a CPU, needs a C++ compiler. Off by default: last-digit differences.
        dropout: dropout probability where the architecture has dropout.
        roi_size: 3D sliding-window size; None = `default_roi_size`, never the data's patch (the runner passes it).
        sw_batch_size, sw_overlap: sliding-window batch and overlap (Gaussian weighting).
        slice_batch_size: slices per forward pass in 2D whole-volume inference.
        init_from: checkpoint whose matching weights initialise this model (transfer).
    """

    spatial_dims: int = 2
    size_divisor: int = 1  # forward pads each spatial axis to a multiple of this...
    min_size: int = 1  # ...and to at least this (e.g. instance norm needs > 1 voxel at the bottleneck)
    default_roi_size: tuple[int, ...] = (64, 64, 64)
    model_name: Optional[str] = None  # set by @register_model
    # Arguments that fetch initial weights, and their "off" value: a checkpoint's own weights
    # replace them, so restoring never re-reads (possibly vanished) files or the network.
    weight_init_off: dict[str, Any] = {"init_from": None}
    # Optional Python packages the architecture needs (checked before building, listed by
    # `liverbench models`), e.g. ("einops",).
    requires: tuple[str, ...] = ()
    # bf16/fp16 inference keeps convolutions with at most this many output channels in fp32
    # (`models.network.full_precision_copy`): where bf16 moves the mask more than it saves time.
    fp32_max_channels: int = 0
    # Train with channels-last weights and inputs: 3D convolutions ran 15-20 % faster per step that way
    # on a 2-core AMD EPYC (fp32 and bf16; 2D ones 4-6 % slower, so 2D stays contiguous; docs/speed.md).
    train_channels_last: Optional[bool] = None  # None: for 3D models

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        loss: str = "ce",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_steps: Optional[int] = None,
        ema_decay: Optional[float] = None,
        compile_training: bool = False,
        dropout: float = 0.0,
        roi_size: Optional[Sequence[int]] = None,
        sw_batch_size: int = 2,
        sw_overlap: float = 0.25,
        slice_batch_size: int = 32,
        init_from: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if "spatial_dims" in self.hparams:  # architectures that work in 2D and 3D
            self.spatial_dims = int(self.hparams.spatial_dims)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        check_schedule(lr_schedule, warmup_steps)
        if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay!r}")
        if loss == "dice_ce":
            from monai.losses import DiceCELoss

            self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        else:
            self.loss_fn = None
        self.train_metrics = _stage_metrics("train")
        self.val_metrics = _stage_metrics("val")
        self.test_metrics = _stage_metrics("test")
        self.net: Optional[nn.Module] = None
        self.configure_model()

    # ---- network ---------------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        """Return the network mapping (B, in_channels, *spatial) to (B, num_classes, *spatial)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_network()")

    def configure_model(self) -> None:
        """Lightning hook; builds the network once (idempotent) and applies initial weights."""
        if self.net is not None:
            return
        missing = missing_requirements(type(self))
        if missing:
            raise ImportError(
                f"model {self.model_name or type(self).__name__} needs the package(s) {', '.join(missing)}: "
                f"pip install {' '.join(missing)}"
            )
        self.net = self.build_network()
        self.initialize_weights()

    # Where the initial weights came from, for result.json and W&B: {"source": "none" | "imagenet" |
    # "synthetic" | "path" | "run", "detail": hash, path or run name}; set by `initialize_weights`.
    transfer: dict[str, Any] = {"source": "none", "detail": None}

    def initialize_weights(self) -> None:
        """Transfer learning hook; subclasses extend it (e.g. ImageNet encoders)."""
        if self.hparams.init_from:
            from models.checkpoint import describe_source, init_weights_from

            init_weights_from(self, self.hparams.init_from)
            self.transfer = describe_source(self.hparams.init_from)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: Optional[bool] = True, **kwargs):
        """Lightning's loader, safe by default (`weights_only=True`; our checkpoints hold plain values),
        with weight-fetching arguments switched off (see `weight_init_off`)."""
        if cls.build_network is SegmentationModule.build_network:  # the base class: use the saved model's class
            from models.checkpoint import saved_model_class
            from models.checkpoint_format import read_checkpoint

            return saved_model_class(read_checkpoint(checkpoint_path), checkpoint_path).load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs)
        overrides = {**cls.weight_init_off, **kwargs}
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict,
                                            weights_only=weights_only, **overrides)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Entries that make the file usable alone (model, network, preprocessing: `models.checkpoint`)."""
        checkpoint.update(describe_checkpoint(self, self._trainer))

    # ---- forward and whole-volume inference -------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for any spatial size: pads to a multiple of `size_divisor` (at least `min_size`), crops back.
        In eval mode through `eval_net` (bit-identical logits, faster)."""
        net = self.train_net if self.training else self.eval_net
        return padded_forward(net, x, self.spatial_dims, self.size_divisor, self.min_size, type(self).__name__)

    @property
    def eval_net(self) -> nn.Module:
        """`self.net` with the max pools that compute indices replaced (`fast_eval_copy(norms=False)`:
        same parameters, bit-identical logits; a 2D U-Net volume 0.87 -> 0.72 s, docs/speed.md). Cached in a
        plain dict, so it is no submodule (not in the state dict) and is rebuilt if `net` is replaced."""
        cache = self.__dict__.setdefault("_eval_net_cache", {})
        if cache.get("net") is not self.net:
            cache.update(net=self.net, eval_net=fast_eval_copy(self.net, norms=False))
        return cache["eval_net"]

    @property
    def train_net(self) -> nn.Module:
        """`self.net`, or with `compile_training` that network through `torch.compile` (same parameters). Cached
        in a dict that copies of this module start without (`_NotCopied`): the weight average's copy must run
        its own weights, never the original's compiled graph."""
        if not self.hparams.get("compile_training"):
            return self.net
        cache = self.__dict__.setdefault("_train_net_cache", _NotCopied())
        if cache.get("net") is not self.net:
            cache.update(net=self.net, compiled=torch.compile(self.net))
        return cache["compiled"]

    @property
    def roi_size(self) -> tuple[int, ...]:
        roi = self.hparams.get("roi_size") or self.default_roi_size
        roi = [roi] * 3 if isinstance(roi, int) else roi
        return tuple(max(int(r), self.min_size) for r in roi)  # smaller windows would be padded anyway

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """Whole-volume logits (1, num_classes, X, Y, Z) for an image (1, C, X, Y, Z): 2D models slice by
        slice, 3D models through MONAI's Gaussian sliding window (`models.network.predict_volume`)."""
        h = self.hparams
        return predict_volume(self, image, self.spatial_dims, self.roi_size, h.sw_batch_size, h.sw_overlap,
                              h.slice_batch_size)

    def inference_spec(self) -> dict[str, Any]:
        """What `models.network.load_network` needs besides the network's own spec."""
        return {"model": self.model_name, "spatial_dims": self.spatial_dims, "size_divisor": int(self.size_divisor),
                "min_size": int(self.min_size), "roi_size": list(self.roi_size),
                "fp32_max_channels": int(self.fp32_max_channels),
                **{k: self.hparams[k] for k in ("sw_batch_size", "sw_overlap", "slice_batch_size")}}

    # ---- training, validation, test -------------------------------------------------------
    def compute_loss(self, logits: torch.Tensor | list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """The loss of one output, or of a deeply supervised network's outputs (full resolution first):
        MONAI's `DeepSupervisionLoss`, weights 1, 1/2, 1/4, ... on nearest-downsampled labels."""
        label = (plain_tensor(label) > 0.5).float()
        if isinstance(logits, (list, tuple)):
            from monai.losses import DeepSupervisionLoss

            return DeepSupervisionLoss(self._single_loss)(list(logits), label)
        return self._single_loss(logits, label)

    def _single_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is not None:
            return self.loss_fn(logits, label)
        return F.cross_entropy(logits, label[:, 0].long())

    def setup(self, stage: str) -> None:
        """Fail early when the DataModule serves the wrong dimensionality; warn of windows unlike its patches."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        dims = getattr(dm, "dims", None)
        if dims is not None and int(dims) != self.spatial_dims:
            raise ValueError(
                f"model {self.model_name or type(self).__name__} is {self.spatial_dims}D but the DataModule "
                f"{type(dm).__name__} serves dims={dims}: set data.init_args.dims={self.spatial_dims}"
            )
        patch = getattr(dm, "patch_size", None)
        if self.spatial_dims == 3 and self.hparams.get("roi_size") is None and patch is not None:
            unlike = windows_unlike_patch(self.roi_size, patch)
            if unlike:
                rank_zero_warn(f"{self.model_name or type(self).__name__}: {unlike}")
        if stage == "fit":  # before the strategy wraps the module and the optimizer takes the parameters
            self.to(memory_format=self._training_memory_format)

    def on_fit_end(self) -> None:
        """Back to the layout a restored checkpoint has, so the fitted module and its checkpoint give
        bit-identical outputs."""
        self.to(memory_format=torch.contiguous_format)

    @property
    def _training_memory_format(self) -> torch.memory_format:
        channels_last = self.spatial_dims == 3 if self.train_channels_last is None else self.train_channels_last
        if not channels_last:
            return torch.contiguous_format
        return torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, label = plain_tensor(batch["image"]), plain_tensor(batch["label"])
        outputs = self(image.contiguous(memory_format=self._training_memory_format))
        loss = self.compute_loss(outputs, label)
        logits = outputs[0] if isinstance(outputs, list) else outputs  # deep supervision: full resolution first
        n = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        scores = overlap_scores(liver_labels(logits), label[:, 0] > 0.5, per_sample=False)
        for name, value in scores.items():
            self.train_metrics[name].update(value)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        image, label = plain_tensor(batch["image"]), plain_tensor(batch["label"])
        logits = self.predict_volume(image)
        loss = self.compute_loss(logits, label)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=1)
        metrics = getattr(self, f"{stage}_metrics")
        for name, value in overlap_scores(liver_labels(logits), label[:, 0] > 0.5).items():
            metrics[name].update(value)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=1, prog_bar=stage == "val")
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Liver mask (1, 1, X, Y, Z) uint8 in the preprocessed grid."""
        return liver_labels(self.predict_volume(batch["image"])).unsqueeze(1)

    def configure_callbacks(self):
        """The weight average as a Lightning callback: it swaps the average in for validation and writes it
        as the checkpoint's `state_dict` (the raw weights stay under `current_model_state`)."""
        if self.hparams.get("ema_decay") is None:
            return []
        from lightning.pytorch.callbacks import WeightAveraging
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        # Lightning's EMAWeightAveraging, with torch's foreach update: the same average at a fraction of the
        # per-step cost of one update per tensor (measured in docs/convergence.md)
        return [WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(float(self.hparams.ema_decay)))]

    def configure_optimizers(self):
        # every parameter, frozen ones included: an encoder frozen for N epochs thaws later
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.get("lr_schedule", "constant") == "constant":
            return opt
        sched = lr_scheduler(opt, self.hparams.lr_schedule, self.hparams.lr, self.trainer.estimated_stepping_batches,
                             self.hparams.get("warmup_steps"))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
