"""The trainer: any registered architecture on any mix of datasets.

One epoch = shuffled training batches (augmented), the architecture's loss plus the
extra losses it reports through ``model.extra_losses(output, targets)``, gradient
clipping, then a validation pass. The learning rate follows a cosine or step schedule
per epoch; the epoch with the best validation mAP (macro) is kept, and training stops
early after ``patience`` epochs without improvement.

Optional model hooks (CM-GM uses them all):
- ``prepare_from_data(images)``: initialise from training images before the epoch that
  ``preparation_epoch(epochs)`` names (the first one if the model does not say; CM-GM:
  the first epoch after its CNN is pre-trained, so it clusters trained features);
- ``training_stages(epochs)``: epoch counts of successive stages; the learning-rate
  schedule restarts at each, and only last-stage epochs can be kept as best;
- ``schedule_step(epoch, step, epochs)`` before each training step (``step`` counted
  from the start of training) to choose which parameters take gradients, and
  ``end_schedule()`` once training is over.
Batches are one tensor, or a dict of tensors for multi-resolution models (K-Branch).
Weakly labelled datasets (engine.data.boxes) may follow the first dataset: their
targets are aligned to its labels with NaN for "not known", the loss skips those
entries, and the label graph and label frequencies come from completely labelled tiles.
With ``weight_average`` > 0 an exponential moving average of the weights
(engine.train.weight_average) is what each epoch validates and what the run keeps and
calibrates; it restarts at each training stage and after ``prepare_from_data``.
A checkpoint is written after every epoch (``<out>/checkpoint``); ``resume=True``
continues from it exactly.
A refit (engine.train.refit) trains on the train and validation splits together, stops
after the epoch its reference kept and takes the reference's thresholds.

CUDA and AMP (float16 autocast + GradScaler) are used when available; several GPUs or
machines through torchrun (see engine.train.distributed).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from engine.band_groups import MULTI_RESOLUTION_ARCHS, band_groups, input_layout
from engine.data.datasets import MultiLabelDataset, Sample
from engine.errors import TileLabelError
from engine.graph.label_graph import LabelGraph
from engine.device import resolve_device
from engine.metrics import SHRINK, calibrate_thresholds, common_threshold, multilabel_metrics
from engine.models.modelfile import ModelSpec, build_model, load_model, save_model
from engine.models.registry import ARCHITECTURES, check_arch_config
from engine.progress import Reporter
from engine.store.annotation_store import check_label_names
from engine.train.checkpoint import load_checkpoint, save_checkpoint
from engine.train.output_dir import CHECKPOINT, check_output_dir, publish, staging_dir
from engine.train.distributed import (DistContext, broadcast_state, gather, init_distributed,
                                      shutdown)
from engine.train.loader import (Augmentation, TrainingView, band_statistics, batch_len,
                                 to_device)
from engine.train.losses import AslSettings, LossTally, build_loss, check_loss_settings
from engine.train.weight_average import WeightAverage

if TYPE_CHECKING:
    from engine.train.refit import DevRefit

METRIC_KEYS = ("mAP_macro", "mAP_micro", "OP", "OR", "OF1", "CP", "CR", "CF1", "F1_macro",
               "EF1", "n_images")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (the CLI's flags, as data)."""

    arch: str = "gap-linear"
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    epochs: int = 10
    batch_size: int = 32
    image_px: int | None = None       # default: the dataset's native size
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1    # backbone learns at lr * this (pretrained features)
    weight_decay: float = 1e-4
    schedule: str = "cosine"          # cosine | step | constant
    warmup_epochs: float = 0.0        # learning rate ramps up linearly over these epochs
    step_every: int = 10
    step_gamma: float = 0.1
    grad_clip: float = 5.0
    weight_average: float = 0.0       # decay of a moving average of the weights (0: off)
    loss: str = "bce"
    label_smoothing: float = 0.0      # targets y (1 - eps) + eps / 2 (engine.train.losses)
    asl_gamma_pos: float = AslSettings.gamma_pos  # loss "asl" only: focusing and margin
    asl_gamma_neg: float = AslSettings.gamma_neg
    asl_clip: float = AslSettings.clip
    patience: int = 5
    seed: int = 0                     # the new layers' weights, shuffling, augmentation
    split_seed: int = 0               # the train/val/test split (the same for every seed)
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    freeze_backbone: bool = False
    allow_no_val: bool = False        # no validation split: keep the last epoch, warn
    model_id: str | None = None
    arch_config: dict[str, Any] = field(default_factory=dict)
    augment: Augmentation = field(default_factory=Augmentation)


def asl_settings(cfg: TrainConfig) -> AslSettings:
    return AslSettings(cfg.asl_gamma_pos, cfg.asl_gamma_neg, cfg.asl_clip)


def warmup_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up: 1/n, 2/n, ... 1 over the first ``warmup_epochs`` of training steps."""
    n = round(cfg.warmup_epochs * steps_per_epoch)
    return 1.0 if n <= 0 else min(1.0, (step + 1) / n)


def learning_rate_factor(cfg: TrainConfig, epoch: int, epochs: int | None = None) -> float:
    """The schedule's factor at ``epoch`` of a run (or stage) of ``epochs`` epochs."""
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if cfg.schedule == "step":
        return cfg.step_gamma ** (epoch // max(cfg.step_every, 1))
    if cfg.schedule == "constant":
        return 1.0
    raise TileLabelError(f"unknown schedule '{cfg.schedule}'; use cosine, step or constant")


def stage_of(model: nn.Module, epoch: int, epochs: int) -> tuple[int, int, bool]:
    """(first epoch, length, is the last stage) of the training stage holding ``epoch``.

    Most models train in one stage. A model with ``training_stages(epochs)`` (a list of
    epoch counts; CM-GM: its feature extractor, then its LSTM predictor) restarts
    the learning rate schedule at each stage, and only epochs of its last stage can be kept
    as best."""
    stages = model.training_stages(epochs) if hasattr(model, "training_stages") else [epochs]
    start = 0
    for i, length in enumerate(stages):
        if epoch < start + length:
            return start, length, i == len(stages) - 1
        start += length
    return start, 0, True


def preparation_epoch(model: nn.Module, epochs: int) -> int:
    """The epoch before which ``prepare_from_data`` runs (0 unless the model says)."""
    hook = getattr(model, "preparation_epoch", None)
    return hook(epochs) if hook is not None else 0


def _items(datasets: list[MultiLabelDataset], split: str, seed: int) -> list[tuple[MultiLabelDataset, Sample]]:
    return [(d, s) for d in datasets for s in d.split(split, seed)]


def _check_vocabularies(datasets: list[MultiLabelDataset],
                        init: ModelSpec | None) -> list[MultiLabelDataset]:
    """The datasets in the first one's label vocabulary (weakly labelled ones aligned to
    it, unknown for the labels they do not name); the first must label completely."""
    first = datasets[0]
    if not first.complete_labels:
        raise TileLabelError(f"{first!r} labels only some classes of each tile, so it cannot "
                             "come first: the first --dataset sets the model's labels; give a "
                             "completely labelled dataset first (e.g. ucmerced:DIR)")
    labels = first.labels
    check_label_names(labels, f"the labels of {first!r}")
    if init is not None and init.labels != labels:
        raise TileLabelError(f"the label vocabulary of the data ({len(labels)} labels, e.g. "
                             f"{labels[0]!r}) does not match --init-from model "
                             f"{init.model_id} ({len(init.labels)} labels, e.g. "
                             f"{init.labels[0]!r}); fine-tune only on data with the same labels")
    return [first] + [d.aligned_to(labels) for d in datasets[1:]]


def complete_targets(items: list[tuple[MultiLabelDataset, Sample]], n_labels: int) -> np.ndarray:
    """[N, C] targets of the samples whose every label is known (label statistics)."""
    rows = [s.target for _, s in items if np.isfinite(s.target).all()]
    return np.stack(rows) if rows else np.zeros((0, n_labels), np.float32)


class Trainer:
    def __init__(self, cfg: TrainConfig, datasets: list[MultiLabelDataset], out: Path,
                 reporter: Reporter, init_from: Path | None = None, resume: bool = False,
                 overwrite: bool = False, refit: DevRefit | None = None) -> None:
        self.cfg, self.datasets, self.out, self.reporter = cfg, datasets, Path(out), reporter
        self.refit = refit
        check_loss_settings(cfg.loss, cfg.label_smoothing, asl_settings(cfg))
        check_arch_config(cfg.arch, cfg.arch_config)
        check_output_dir(self.out, init_from, resume, overwrite)
        if cfg.patience < 1 or cfg.epochs < 1:
            raise TileLabelError("--epochs and --patience must be at least 1")
        self.device = resolve_device(cfg.device)
        self.ctx: DistContext = init_distributed(self.device.type)
        if self.ctx.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
        self.resume = resume
        self.fine_tuning = init_from is not None
        parent_model, parent = (load_model(init_from) if init_from else (None, None))
        self.datasets = datasets = _check_vocabularies(datasets, parent)
        labels = datasets[0].labels
        self.train_items = _items(datasets, "train", cfg.split_seed)
        self.val_items = _items(datasets, "val", cfg.split_seed)
        for name, items in (("train", self.train_items), ("val", self.val_items)):
            if not items and not (name == "val" and (cfg.allow_no_val or refit)):
                raise TileLabelError(f"the {name} split of {', '.join(map(repr, datasets))} is "
                                     "empty; add data (or more corrected tiles)")
        if refit is not None:  # the whole development data; the reference chose for it
            self.train_items, self.val_items = self.train_items + self.val_items, []
            reporter.log(f"refit of {refit.reference_id} on the train and validation splits "
                         f"({len(self.train_items)} images): stopping after epoch "
                         f"{refit.keep_epoch}, its thresholds")
        elif not self.val_items:
            reporter.log("no validation images: every epoch is kept as it comes and no "
                         "validation metrics are recorded", "warning")
        self.spec, self.model = self._model(labels, parent, parent_model)
        self._check_weak_labels()

    def _check_weak_labels(self) -> None:
        """Weakly labelled data trains through the main loss, which skips unknown labels;
        an architecture whose own losses read every label (CM-GM's ranking and LSTM,
        SRDL's object erasing, Deep-LIFT's label term) would read them as absent. A model
        whose own losses skip unknown labels says so with ``extra_losses_skip_unknown``."""
        weak = [d for d in self.datasets if not d.complete_labels]
        if (weak and hasattr(self.model, "extra_losses")
                and not getattr(self.model, "extra_losses_skip_unknown", False)):
            raise TileLabelError(
                f"{weak[0]!r} labels only some classes of each tile, and the own losses of "
                f"'{self.spec.arch}' need every label of a tile; train {self.spec.arch} on "
                "completely labelled datasets, or use gap-linear, mlgcn, cma or ms-cma with "
                "weakly labelled data")

    def _model(self, labels: list[str], parent: ModelSpec | None,
               parent_model: nn.Module | None) -> tuple[ModelSpec, nn.Module]:
        cfg, first = self.cfg, self.datasets[0]
        if parent is not None:
            spec = ModelSpec(**{**asdict(parent), "parent": parent.model_id, "metrics": {},
                                "training": {}})
            spec.model_id = cfg.model_id or f"{parent.model_id}-ft{time.strftime('%Y%m%d%H%M%S')}"
            return spec, parent_model
        px = cfg.image_px or first.default_px
        # single-resolution models see each image resized to px, so the native ground
        # extent at this GSD; multi-resolution ones read their bands at native pixel size
        gsd = (first.gsd_m if cfg.arch in MULTI_RESOLUTION_ARCHS
               else first.gsd_m * first.default_px / px)
        # multi-resolution architectures (K-Branch) group the bands by native resolution
        bands, arch_config = input_layout(cfg.arch, list(first.bands), gsd, px,
                                          {"backbone": cfg.backbone, **cfg.arch_config})
        own = [s for d, s in self.train_items if d is first]
        mean, std = band_statistics(first, own, bands, px, band_groups(arch_config))
        graph = LabelGraph.mine(labels, complete_targets(self.train_items, len(labels)))
        spec = ModelSpec(
            model_id=cfg.model_id or f"{first.kind}-{cfg.arch}-{time.strftime('%Y%m%d%H%M%S')}",
            arch=cfg.arch, labels=labels, bands=bands, gsd_m=gsd, tile_px=px,
            mean=mean, std=std, arch_config=arch_config,
            label_graph=graph.to_json(),
            description=f"{cfg.arch}{self._backbone_note(arch_config)} trained on "
                        f"{', '.join(d.kind for d in self.datasets)}")
        if ARCHITECTURES.get(cfg.arch) and ARCHITECTURES[cfg.arch].needs_label_embeddings:
            spec.label_embeddings = self._label_embeddings(spec.labels, required=True)
        torch.manual_seed(cfg.seed)  # the new layers' initial weights
        return spec, build_model(spec, pretrained=cfg.pretrained)

    @staticmethod
    def _backbone_note(arch_config: dict[str, Any]) -> str:
        return f" ({arch_config['backbone']})" if "backbone" in arch_config else ""

    # -- data -------------------------------------------------------------------------
    def _view(self, items: list, train: bool) -> TrainingView:
        return TrainingView(items, self.spec.bands, self.spec.tile_px, self.spec.mean,
                            self.spec.std, train, self.cfg.seed,
                            groups=band_groups(self.spec.arch_config),
                            augmentation=self.cfg.augment)

    def _loader(self, view: TrainingView, train: bool, epoch: int) -> DataLoader:
        if self.ctx.enabled:
            sampler = DistributedSampler(view, self.ctx.world_size, self.ctx.rank,
                                         shuffle=train, seed=self.cfg.seed)
            sampler.set_epoch(epoch)
        elif train:
            sampler = RandomSampler(view, generator=torch.Generator().manual_seed(
                self.cfg.seed * 7919 + epoch))
        else:
            sampler = SequentialSampler(view)
        return DataLoader(view, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda")

    # -- optimisation -----------------------------------------------------------------
    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        backbone = getattr(model, "backbone", None)
        if backbone is not None and self.cfg.freeze_backbone:
            backbone.requires_grad_(False)
        bb_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        bb = [p for p in model.parameters() if id(p) in bb_ids and p.requires_grad]
        rest = [p for p in model.parameters() if id(p) not in bb_ids and p.requires_grad]
        groups = [{"params": rest, "lr": self.cfg.lr, "base_lr": self.cfg.lr}]
        if bb:
            lr = self.cfg.lr * self.cfg.backbone_lr_scale
            groups.append({"params": bb, "lr": lr, "base_lr": lr})
        return torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)

    def run(self) -> dict[str, Any]:
        cfg, main = self.cfg, self.ctx.is_main
        model = self.model.to(self.device)
        optimizer = self._optimizer(model)
        net = (nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # a model training its parameter groups in turn leaves the others unused
            find_unused_parameters=hasattr(model, "schedule_step"))
            if self.ctx.enabled else model)
        criterion = build_loss(cfg.loss, complete_targets(
            self.train_items, len(self.spec.labels)), cfg.label_smoothing,
            asl_settings(cfg)).to(self.device)
        use_amp = cfg.amp and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        train_view, val_view = self._view(self.train_items, True), self._view(self.val_items, False)
        ckpt = self.out / CHECKPOINT
        state: dict[str, Any] = {"epoch": -1, "best_map": -1.0, "best_epoch": -1,
                                 "stale": 0, "history": [], "images_seen": 0, "train_seconds": 0.0}
        best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        average = WeightAverage(model, cfg.weight_average) if cfg.weight_average else None
        if self.resume:
            state, best, averaged = load_checkpoint(ckpt, model, optimizer)
            scaler.load_state_dict(state.pop("amp_scaler", None) or scaler.state_dict())
            if average is not None:
                average.restore(averaged, state.pop("average_updates", 0))
            if main:
                self.reporter.log(f"resuming after epoch {state['epoch'] + 1} from {ckpt}")
        steps_per_epoch = math.ceil(len(train_view) / (cfg.batch_size * self.ctx.world_size))
        last = self.refit.keep_epoch if self.refit else cfg.epochs  # a refit stops early
        if main:  # the model and data are ready: the batches start
            self.reporter.progress("train", (state["epoch"] + 1) * steps_per_epoch,
                                   last * steps_per_epoch)
        for epoch in range(state["epoch"] + 1, min(cfg.epochs, last)):
            if state["stale"] >= cfg.patience:
                break
            if epoch == preparation_epoch(model, cfg.epochs) and not self.fine_tuning:
                self._prepare(model)  # a resumed run past this epoch has it in its weights
            torch.manual_seed(cfg.seed * 104_729 + epoch)
            train_view.epoch = epoch
            start, length, last_stage = stage_of(model, epoch, cfg.epochs)
            if average is not None and (epoch == start or
                                        epoch == preparation_epoch(model, cfg.epochs)):
                average.restart(model)  # never average the weights of two stages
            epoch_factor = learning_rate_factor(cfg, epoch - start, length)
            model.train()
            if cfg.freeze_backbone and hasattr(model, "backbone"):
                model.backbone.eval()  # frozen means frozen batch-norm statistics too
            t0, tally = time.perf_counter(), LossTally()
            schedule = getattr(model, "schedule_step", None)
            for step, (x, y, _) in enumerate(self._loader(train_view, True, epoch)):
                x, y = to_device(x, self.device), y.to(self.device, non_blocking=True)
                global_step = epoch * steps_per_epoch + step
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * epoch_factor * warmup_factor(cfg, global_step,
                                                                          steps_per_epoch)
                if schedule is not None:  # models that train parameter groups in turn
                    schedule(epoch, global_step, cfg.epochs)
                with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                    out = net(x)
                    terms = {cfg.loss: criterion(out.logits.float(), y)}
                    extra = getattr(model, "extra_losses", None)
                    if extra is not None:
                        terms.update(extra(out, y))
                    loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if average is not None:
                    average.update(model)
                tally.add(terms)
                state["images_seen"] += batch_len(x) * self.ctx.world_size
                if main:
                    self.reporter.progress("train", epoch * steps_per_epoch + step + 1,
                                           last * steps_per_epoch)
            state["train_seconds"] += time.perf_counter() - t0
            with average.applied(model) if average is not None else nullcontext():
                metrics = self.validate(net, val_view) if self.val_items else None
            # the weights this epoch would keep: the average's when the run keeps one
            candidate = average.weights if average is not None else model.state_dict()
            entry = {"epoch": epoch, "loss": tally.total(), "loss_terms": tally.means(),
                     **{k: (metrics or {}).get(k) for k in METRIC_KEYS},
                     "lr": optimizer.param_groups[0]["lr"]}
            state["history"].append(entry)
            no_figure = metrics is None or not np.isfinite(metrics["mAP_macro"])
            if not last_stage:
                pass  # an earlier stage's model is not finished: nothing to keep yet
            elif no_figure and state["best_map"] < 0:
                # Nothing to choose by (no validation images, or none with a label) and no
                # earlier figure: keep the latest epoch.
                state.update(best_epoch=epoch)
                best = {k: v.detach().clone() for k, v in candidate.items()}
            elif not no_figure and metrics["mAP_macro"] > state["best_map"]:
                state.update(best_map=metrics["mAP_macro"], best_epoch=epoch, stale=0,
                             best_metrics={k: metrics[k] for k in METRIC_KEYS},
                             best_per_class=metrics["per_class"])
                best = {k: v.detach().clone() for k, v in candidate.items()}
            else:
                state["stale"] += 1
            state["epoch"] = epoch
            if main:
                save_checkpoint(ckpt, model, best, optimizer,
                                {**state, "amp_scaler": scaler.state_dict(),
                                 "average_updates": average.updates if average else 0},
                                average.weights if average is not None else None)
                figures = (f"  val mAP {metrics['mAP_macro']:.3f}  OF1 {metrics['OF1']:.3f}  "
                           f"CF1 {metrics['CF1']:.3f}" if metrics else "")
                self.reporter.log(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}"
                    f"{tally.breakdown()}{figures}"
                    f"{'  (best)' if metrics and state['best_epoch'] == epoch else ''}",
                    epoch_metrics=entry)
        model.load_state_dict(best)
        if hasattr(model, "end_schedule"):
            model.end_schedule()
        if main:
            self.reporter.stage("calibrating the thresholds")
        self._calibrate(net, val_view, state)  # every rank: validation gathers across ranks
        result = self._finish(model, state) if main else {}
        shutdown(self.ctx)
        return result

    def _prepare(self, model: nn.Module, n_images: int = 64) -> None:
        """Let a model initialise itself from training images (CM-GM's channel grouping):
        the first ``n_images`` in split order, not augmented, the same on every rank."""
        prepare = getattr(model, "prepare_from_data", None)
        if prepare is None:
            return
        view = self._view(self.train_items[:n_images], False)
        torch.manual_seed(self.cfg.seed)
        prepare(torch.stack([view[i][0] for i in range(len(view))]).to(self.device))
        broadcast_state(model, self.ctx)  # every rank starts the stage from rank 0's result

    def _calibrate(self, net: nn.Module, view: TrainingView, state: dict[str, Any]) -> None:
        """Per-label thresholds from the kept model's validation scores (engine.metrics:
        each label's F1-best value moved halfway back to the model's common threshold),
        stored in the model; its metrics are recorded at 0.5 and at those thresholds,
        so a gain is never a threshold effect. A model whose probabilities encode its own
        decision rule (CM-GM's credible labels) keeps 0.5."""
        if not self.val_items:
            return
        scores, targets = self.validation_scores(net, view)
        at_half = multilabel_metrics(scores, targets, np.full(len(self.spec.labels), 0.5),
                                     self.spec.labels)
        state["metrics_at_0.5"] = {k: at_half[k] for k in METRIC_KEYS}
        if getattr(self.model, "OWN_DECISION_RULE", False):
            return
        common = common_threshold(scores, targets)
        self.spec.thresholds = calibrate_thresholds(scores, targets, self.spec.thresholds,
                                                    towards=common)  # None: a new model
        state["threshold_rule"] = {"shrink": SHRINK, "towards": common}
        tuned = multilabel_metrics(scores, targets, np.asarray(self.spec.thresholds),
                                   self.spec.labels)
        state.update(best_metrics={k: tuned[k] for k in METRIC_KEYS},
                     best_per_class=tuned["per_class"])

    @torch.no_grad()
    def validation_scores(self, net: nn.Module, view: TrainingView) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, targets) of the validation images, gathered from every rank."""
        net.eval()
        scores, targets, index = [], [], []
        for x, y, i in self._loader(view, False, 0):
            out = net(to_device(x, self.device))
            scores.append(torch.sigmoid(out.logits.float()).cpu().numpy())
            targets.append(y.numpy())
            index.append(i.numpy())
        parts = gather((np.concatenate(scores), np.concatenate(targets), np.concatenate(index)),
                       self.ctx)
        s, t, i = (np.concatenate([p[k] for p in parts]) for k in range(3))
        _, first = np.unique(i, return_index=True)  # DistributedSampler pads with repeats
        return s[first], t[first]

    def validate(self, net: nn.Module, view: TrainingView) -> dict[str, Any]:
        scores, targets = self.validation_scores(net, view)
        return multilabel_metrics(scores, targets, np.asarray(self.spec.label_thresholds()),
                                  self.spec.labels)

    def _label_embeddings(self, labels: list[str], required: bool = False) -> list[list[float]] | None:
        """Text embeddings of the labels, cached in model.json (graph models use them as
        GCN inputs; inference never needs the text model). Without a text model they are
        skipped with a warning, unless the architecture needs them."""
        from engine.graph.label_embeddings import embed_labels

        try:
            return np.round(embed_labels(labels), 6).tolist()
        except (TileLabelError, ImportError, OSError) as exc:
            if required:
                raise TileLabelError(f"architecture '{self.cfg.arch}' needs label text "
                                     f"embeddings and none could be computed: {exc}") from exc
            self.reporter.log(f"label embeddings not stored: {exc}", "warning")
            return None

    def _finish(self, model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        throughput = state["images_seen"] / max(state["train_seconds"], 1e-9)
        self.spec.metrics = {"val": state.get("best_metrics", {}),
                             "val_at_0.5": state.get("metrics_at_0.5", {}),
                             "val_per_class": state.get("best_per_class", {})}
        if self.refit is not None:
            self.spec.thresholds = self.refit.thresholds
        self.spec.training = {
            "datasets": [f"{d.kind}:{d.root}" for d in self.datasets],
            "split_seed": cfg.split_seed, "seed": cfg.seed,
            "n_train": len(self.train_items), "n_val": len(self.val_items),
            "train_images": sorted(s.name for _, s in self.train_items),
            "config": asdict(cfg), "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"] + 1, "history": state["history"],
            "images_per_second": round(throughput, 2), "device": self.device.type,
            "world_size": self.ctx.world_size,
            **({"threshold_rule": state["threshold_rule"]} if "threshold_rule" in state else {}),
            **({"refit": self.refit.record()} if self.refit else {})}
        if self.spec.label_embeddings is None:
            self.spec.label_embeddings = self._label_embeddings(self.spec.labels)
        self.reporter.stage("saving the model")
        staged = staging_dir(self.out)
        save_model(model, self.spec, staged)
        publish(staged, self.out)
        return {"model": str(self.out.resolve()), "model_id": self.spec.model_id,
                "best_epoch": state["best_epoch"], "epochs_run": state["epoch"] + 1,
                "metrics": self.spec.metrics["val"], "images_per_second": round(throughput, 2),
                "parent": self.spec.parent}
