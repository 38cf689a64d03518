"""The ``tilelabel`` command (also ``python -m engine.cli``).

Exit codes: 0 success; 2 bad input (one ``error: ...`` line on stderr, no traceback
unless --debug); 130 interrupted (Ctrl-C or SIGTERM), the store left consistent;
1 an unexpected internal error. With --json-progress, stdout carries only the JSON
events of the job protocol (DESIGN.md).
"""
from __future__ import annotations

import argparse
import errno
import json
import shutil
import signal
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Callable

from engine import interrupt
from engine.errors import JobInterrupted, TileLabelError
from engine.progress import Reporter


def _raise_interrupt(signum: int, _frame: object) -> None:
    """Turn the first SIGTERM into JobInterrupted; ignore repeats so that the clean-up
    (rolling back, recording the run as interrupted) is not itself interrupted."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reason = f"stopped by signal {signal.Signals(signum).name}"
    interrupt.request(reason)  # kept even if the raise below is swallowed (interrupt.py)
    raise JobInterrupted(reason)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json-progress", action="store_true",
                   help="print one JSON event per line on stdout (job protocol) and nothing else")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _tta_flag(p: argparse.ArgumentParser) -> None:
    from engine.infer.tta import TTA_VIEWS

    p.add_argument("--tta", default="none", choices=tuple(TTA_VIEWS),
                   help="test-time augmentation: average each tile's prediction over 4 "
                   "(flips) or 8 (dihedral: flips and quarter turns) views of it, at 4 or 8 x "
                   "the time per tile (default: %(default)s)")


def _check_new_file(path: str | None, overwrite: bool, flag: str) -> None:
    """A result file is never replaced unless the user asked (before any work is done)."""
    if path and Path(path).exists() and not overwrite:
        raise TileLabelError(f"{path} already exists; choose another {flag} file, or pass "
                             "--overwrite to replace it")


def _extent(values: list[str]) -> tuple[float, float, float, float]:
    try:
        minx, miny, maxx, maxy = (float(v) for v in values)
    except ValueError as exc:
        raise TileLabelError(f"--extent needs four numbers MINX MINY MAXX MAXY, got "
                             f"{' '.join(values)}") from exc
    return minx, miny, maxx, maxy


def _bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError as exc:
        raise TileLabelError(f"--bands takes comma-separated raster band numbers such as "
                             f"3,2,1; got {text!r}") from exc


def _folder_or_url(text: str | None) -> Path | str | None:
    """A folder, or an fsspec URL kept as written (a Path would fold its '//')."""
    return None if not text else text if "://" in text else Path(text)


def cmd_annotate(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.infer.annotate import AnnotateOptions, run_annotate
    from engine.infer.raster_inputs import expand_inputs
    from engine.models.spec import read_spec

    multires = read_spec(Path(args.model)).arch_config.get("band_groups") is not None
    rasters = expand_inputs(args.raster, band_folders=multires)
    opts = AnnotateOptions(
        raster=rasters[0], store=Path(args.out), model_dir=Path(args.model),
        extent=_extent(args.extent) if args.extent else None, extent_crs=args.extent_crs,
        overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        attention_dir=_folder_or_url(args.attention_dir),
        attention=not args.no_attention, bands=_bands(args.bands),
        allow_gsd_mismatch=args.allow_gsd_mismatch, s2_offset=args.s2_offset,
        workers=args.workers, runtime=args.runtime, threads=args.threads, tta=args.tta,
        block_tiles=args.cluster_block, min_valid=args.min_valid)
    if len(rasters) > 1 or args.store_crs or args.cluster:
        return _annotate_many(rasters, opts, args.store_crs, args.cluster, reporter)
    result = run_annotate(opts, reporter)
    reporter.result(result)
    if not reporter.json_lines:
        print(_annotate_summary(result))
    return 0


SOME_RASTERS_FAILED = 3  # exit code: the other rasters are in the store


def _annotate_many(rasters: list[str], opts, store_crs: str | None, cluster: str | None,
                   reporter: Reporter) -> int:
    from engine.infer.annotate_many import run_annotate_many

    result = run_annotate_many(rasters, opts, reporter, store_crs, cluster)
    reporter.result(result)
    if not reporter.json_lines:
        for r in result["rasters"]:
            print(f"  {r['outcome']:>11}  {r['tiles_written']:6d} tiles  {r['raster']}"
                  + (f"  ({r['message']})" if r["message"] else ""))
        print(f"annotated {result['tiles_written']} tiles of {len(result['rasters'])} rasters "
              f"in {result['seconds']} s into {result['store']} (CRS {result['crs']}); "
              f"{result['failed']} failed")
    return SOME_RASTERS_FAILED if result["failed"] else 0


def _annotate_summary(r: dict) -> str:
    lines = [f"annotated {r['tiles_written']} tiles ({r['tiles_skipped_nodata']} tiles of no "
             f"or too little data skipped) in {r['seconds']} s with model {r['model_id']} "
             f"on {r['runtime']} ({r['device']})",
             f"  store:     {r['store']}  (layer 'tiles', CRS {r['crs']})"]
    if r["attention"]:
        lines.append(f"  attention: {r['attention']}  (one band per label)")
    lines.append("open in QGIS: Layer > Add Layer > Add Vector Layer, choose the store "
                 "(layer 'tiles'); add the attention GeoTIFF as a raster layer and pick a "
                 "band (a label) with singleband pseudocolour.")
    return "\n".join(lines)


def cmd_models_list(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.models.registry import ARCHITECTURES

    rows = [{"arch": a.name, "description": a.description, "paper": a.paper}
            for a in ARCHITECTURES.values()]
    if reporter.json_lines:
        reporter.result({"architectures": rows})
    else:
        for r in rows:
            print(f"{r['arch']:12s} {r['description']}\n{'':12s} paper: {r['paper']}")
    return 0


def cmd_models_export_onnx(args: argparse.Namespace, reporter: Reporter) -> int:
    _needs_torch("ONNX export")
    from engine.infer.onnx_export import export_onnx

    graph, record = export_onnx(Path(args.model_dir), force=args.force)
    result = {"onnx": str(graph), "inputs": record.inputs, "attention": record.attention,
              "opset": record.opset, "weights_sha256": record.weights_sha256}
    reporter.result(result)
    if not reporter.json_lines:
        print(f"ONNX graph of {args.model_dir}: {graph} (inputs {', '.join(record.inputs)}; "
              f"{'with' if record.attention else 'without'} attention); checked against "
              "PyTorch")
    return 0


def cmd_models_info(args: argparse.Namespace, reporter: Reporter) -> int:
    from dataclasses import asdict

    from engine.infer.onnx_file import trusted_graph
    from engine.models.spec import check_weights, read_spec

    spec = read_spec(Path(args.model_dir))
    check_weights(Path(args.model_dir))
    graph = trusted_graph(Path(args.model_dir))
    info = asdict(spec)
    info["onnx"] = str(graph[0]) if graph else None
    info.pop("label_embeddings", None)
    info.get("training", {}).pop("train_images", None)
    if reporter.json_lines:
        reporter.result({"model": info})
    else:
        print(f"model {spec.model_id} ({spec.arch}): {spec.description}")
        print(f"  input: {len(spec.bands)} bands {', '.join(spec.bands)}, {spec.tile_px} px "
              f"tiles at {spec.gsd_m} m/px ({spec.tile_px * spec.gsd_m:.1f} m on the ground)")
        print(f"  labels ({len(spec.labels)}): {', '.join(spec.labels)}")
        print(f"  ONNX graph: {info['onnx'] or 'none yet (made on first annotate, or by '}"
              f"{'' if info['onnx'] else 'tilelabel models export-onnx)'}")
        for split, m in spec.metrics.items():
            figures = "  ".join(f"{k} {v:.3f}" for k, v in m.items()
                                if isinstance(v, float))
            print(f"  {split}: {figures}")
    return 0


# train flags -> TrainConfig fields; a flag not given leaves the recipe's (or the default) value
_TRAIN_FLAGS = {"arch": "arch", "backbone": "backbone", "epochs": "epochs",
                "batch_size": "batch_size", "image_size": "image_px", "lr": "lr",
                "weight_decay": "weight_decay", "schedule": "schedule",
                "grad_clip": "grad_clip", "weight_average": "weight_average",
                "loss": "loss", "label_smoothing": "label_smoothing", "patience": "patience",
                "seed": "seed", "split_seed": "split_seed", "device": "device",
                "workers": "workers",
                "model_id": "model_id"}
_TRAIN_SWITCHES = {"no_pretrained": ("pretrained", False), "no_amp": ("amp", False),
                   "freeze_backbone": ("freeze_backbone", True),
                   "allow_no_val": ("allow_no_val", True)}


def _train_overrides(args: argparse.Namespace) -> dict:
    given = vars(args)
    out = {field: given[flag] for flag, field in _TRAIN_FLAGS.items() if flag in given}
    out.update({field: value for flag, (field, value) in _TRAIN_SWITCHES.items()
                if given.get(flag)})
    out["arch_config"] = {k: given[f] for k, f in (("backbone_weights", "backbone_weights"),
                                                   ("variant", "variant")) if given.get(f)}
    return out


def _needs_torch(what: str) -> None:
    from engine.infer.runtime import installed

    if not installed("torch"):
        raise TileLabelError(f"{what} needs PyTorch, which this engine was installed without "
                             "(the light install): in QGIS run TileLabel > Install engine... "
                             "and choose Full, or pip install 'tilelabel[train]'")


def _refit_reference(args: argparse.Namespace):
    """The model --refit names (its spec), after refusing the flags a refit cannot take."""
    if not args.refit:
        return None
    from engine.models.modelfile import read_spec

    clash = [flag for flag, given in (("--recipe", args.recipe), ("--init-from", args.init_from))
             if given]
    if clash:
        raise TileLabelError(f"--refit trains the reference model's own recipe from its "
                             f"backbone; leave out {' and '.join(clash)}")
    if Path(args.refit).resolve() == Path(args.out).resolve():
        raise TileLabelError("--out is the --refit model itself; give a new folder for the "
                             "refitted model (the reference is kept)")
    return read_spec(Path(args.refit))


def cmd_train(args: argparse.Namespace, reporter: Reporter) -> int:
    _needs_torch("training")
    from engine.data.datasets import open_dataset
    from engine.models.modelfile import read_spec
    from engine.train.output_dir import check_output_dir
    from engine.train.recipe import load_recipe, make_config
    from engine.train.refit import check_same_data, refit_plan
    from engine.train.trainer import Trainer

    init_from = Path(args.init_from) if args.init_from else None
    reference = _refit_reference(args)
    check_output_dir(Path(args.out), init_from, args.resume, args.overwrite)  # before any work
    bands = read_spec(init_from).bands if init_from else None
    reporter.stage("reading the training data")
    datasets = [open_dataset(spec, bands=bands) for spec in args.dataset]
    for d in datasets:
        for warning in d.warnings:
            reporter.log(f"{d!r}: {warning}", "warning")
    refit = None
    if reference is not None:
        check_same_data(reference, datasets)
        cfg, refit = refit_plan(reference, _train_overrides(args))
    else:
        cfg = make_config(load_recipe(Path(args.recipe)) if args.recipe else {},
                          _train_overrides(args))
    reporter.stage("loading the model")
    result = Trainer(cfg, datasets, Path(args.out), reporter, init_from, args.resume,
                     args.overwrite, refit).run()
    if result:
        reporter.result(result)
        if not reporter.json_lines:
            m = result["metrics"]
            figures = (f"val mAP {m['mAP_macro']:.3f}  OF1 {m['OF1']:.3f}  CF1 {m['CF1']:.3f}"
                       if m else "no validation data")
            print(f"model {result['model_id']} written to {result['model']}\n"
                  f"  kept epoch {result['best_epoch'] + 1} of {result['epochs_run']}: "
                  f"{figures} ({result['images_per_second']} images/s)")
    return 0


def cmd_evaluate(args: argparse.Namespace, reporter: Reporter) -> int:
    _needs_torch("evaluate")
    from engine.train.evaluate import evaluate, metrics_table

    _check_new_file(args.report, args.overwrite, "--report")
    metrics = evaluate(Path(args.model), args.dataset, args.split, reporter,
                       args.batch_size, args.device, args.tta)
    if args.report:
        Path(args.report).write_text(json.dumps(metrics, indent=2) + "\n")
    reporter.result({k: v for k, v in metrics.items() if k != "per_class"}
                    | {"report": args.report})
    if not reporter.json_lines:
        print(metrics_table(metrics))
    return 0


def cmd_graph(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.data.datasets import open_dataset
    from engine.graph.drawing import draw_label_graph
    from engine.graph.label_graph import LabelGraph

    _check_new_file(args.out, args.overwrite, "--out")
    _check_new_file(args.png, args.overwrite, "--png")
    dataset = open_dataset(args.dataset)
    if not dataset.complete_labels:
        raise TileLabelError(f"{dataset!r} labels only some classes of each tile; label "
                             "co-occurrence needs every label of a tile: mine the graph of a "
                             "completely labelled dataset")
    samples = dataset.split(args.split) if args.split else dataset.samples
    graph = LabelGraph.mine(dataset.labels, dataset.targets(samples), args.tau)
    Path(args.out).write_text(json.dumps(graph.to_json(), indent=1) + "\n")
    png = str(draw_label_graph(graph, Path(args.png))) if args.png else None
    reporter.result({"graph": args.out, "png": png, "edges": len(graph.edges()),
                     "labels": len(graph.labels), "n_images": graph.n_images})
    if not reporter.json_lines:
        print(f"{len(graph.edges())} edges among {len(graph.labels)} labels "
              f"(P(Lj|Li) >= {args.tau}, {graph.n_images} images) -> {args.out}"
              + (f", drawn in {png}" if png else ""))
        for a, b, p in sorted(graph.edges(), key=lambda e: -e[2])[:10]:
            print(f"  {a} -> {b}  {p:.2f}")
    return 0


def cmd_correct(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.store import AnnotationStore

    tiles = args.tile or []
    if not tiles and not args.undo:
        raise TileLabelError("name the tiles to correct with --tile ID (repeatable)")
    with AnnotationStore.open(Path(args.store)) as store:
        if args.undo:
            tiles, action = store.undo_last(tiles or None, author=args.author), "undone"
        elif args.verify:
            store.add_correction(tiles, None, status="verified", author=args.author,
                                 note=args.note)
            action = "verified"
        elif args.add or args.remove:
            store.change_label(tiles, args.add or args.remove, present=bool(args.add),
                               author=args.author, note=args.note)
            action = "corrected"
        else:
            labels = [l.strip() for l in (args.labels or "").split(";") if l.strip()]
            store.add_correction(tiles, labels, author=args.author, note=args.note)
            action = "corrected"
        rows = {t: store.tile(t) for t in tiles}
    reporter.result({"store": args.store, "action": action,
                     "tiles": {t: {"final_labels": r["final_labels"], "status": r["status"]}
                               for t, r in rows.items()}})
    if not reporter.json_lines:
        for t, r in rows.items():
            print(f"{t}: {r['status']}: {r['final_labels'] or '(no labels)'}")
    return 0


def cmd_export(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.store.export import export_labelled

    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    result = export_labelled(Path(args.store), Path(args.out), statuses,
                             Path(args.chips) if args.chips else None, args.overwrite)
    reporter.result(result)
    if not reporter.json_lines:
        print(f"exported {result['tiles']} tiles to {result['export']} (layer labelled_tiles)"
              + (f"; {result['chips']} chips in {result['chips_dir']}" if args.chips else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.defaults import DEFAULT_MODEL, MIN_VALID_FRACTION

    parser = argparse.ArgumentParser(prog="tilelabel", description=(
        "TileLabel engine: multi-label annotation of aerial and satellite imagery."))
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("annotate", help="label every tile of a raster extent into a GeoPackage store",
                       description="Cut RASTER into model tiles (in ground units), predict "
                       "every label per tile, and write the tiles to a GeoPackage store plus a "
                       "per-label attention GeoTIFF beside it. Several rasters go into one "
                       "store (one run; a raster that fails is reported and skipped, exit code "
                       "3; re-running skips the rasters already annotated by the model).")
    a.add_argument("raster", nargs="+", help="any GDAL raster (GeoTIFF, COG, JP2, VRT); for a "
                   "multi-resolution model (kbranch) also a folder of Sentinel-2 band files at "
                   "their native resolutions. Several: list them, or give a folder of rasters, "
                   "a glob ('tiles/*.tif'), a .txt file of paths or a STAC ItemCollection "
                   ".json")
    a.add_argument("--cluster", help="read and predict on a Dask cluster: local:N (N worker "
                   "processes on this machine) or a scheduler address (tcp://host:8786); the "
                   "workers must see the rasters and the model at the same paths "
                   "(docs/scaling.md)")
    a.add_argument("--cluster-block", type=int, default=256, help="with --cluster: about "
                   "this many tiles per task, in whole tile rows (default %(default)s)")
    a.add_argument("--store-crs", help="with several rasters: the store's CRS, e.g. EPSG:32631 "
                   "(default: an existing store's, else the first raster's); tiles of rasters "
                   "in other CRSs are reprojected into it")
    a.add_argument("--out", required=True, help="annotation store (.gpkg), created or updated")
    a.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory (default: %(default)s)")
    a.add_argument("--extent", nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"),
                   help="annotate only this extent (default: the whole raster)")
    a.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326 (default: the raster's)")
    a.add_argument("--overlap", type=float, default=0.0, help="tile overlap fraction in [0, 0.9)")
    a.add_argument("--min-valid", type=float, default=MIN_VALID_FRACTION, metavar="SHARE",
                   help="skip tiles holding less than this share of real data (edge slivers, "
                   "nodata), where the padding would make up the labels; 0 predicts every "
                   "tile that holds any (default: %(default)s)")
    a.add_argument("--batch-size", type=int, default=16, help="tiles per model batch")
    a.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    a.add_argument("--attention-dir", help="folder for the attention GeoTIFF "
                   "(default: <store name>_attention beside the store); with --cluster also "
                   "an fsspec URL the workers write (s3://bucket/run, file:///shared/att)")
    a.add_argument("--no-attention", action="store_true", help="do not write attention rasters")
    a.add_argument("--bands", help="raster band numbers feeding the model's bands, in model "
                   "order, e.g. 3,2,1 (default: matched by band name)")
    a.add_argument("--allow-gsd-mismatch", action="store_true",
                   help="annotate even when the raster's resolution is far from the model's")
    a.add_argument("--s2-offset", type=float, help="Sentinel-2 L2A BOA_ADD_OFFSET (e.g. -1000) "
                   "when the raster's metadata does not carry it")
    a.add_argument("--workers", type=int, help="tile-reading threads (default: 1 on CPU, "
                   "4 with CUDA)")
    a.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                   help="what runs the model: auto (ONNX Runtime on the CPU when installed, "
                   "PyTorch on CUDA), torch or onnx (default: auto)")
    a.add_argument("--threads", type=int, help="ONNX Runtime compute threads "
                   "(default: one per CPU core)")
    _tta_flag(a)
    _common(a)
    a.set_defaults(func=cmd_annotate)

    t = sub.add_parser("train", help="train a model on one or more datasets",
                       description="Train ARCH on KIND:PATH datasets (ucmerced, bigearthnet-v1, "
                       "bigearthnet-v2, gpkg; nwpu-vhr10 as extra weakly labelled data) and "
                       "write a model directory. Several GPUs or machines: start it with "
                       "torchrun.")
    t.add_argument("--recipe", help="a training recipe (TOML, e.g. recipes/default.toml): "
                   "its values are the defaults; flags given here win over it")
    hp = argparse.SUPPRESS  # hyper-parameters not given come from the recipe or TrainConfig
    t.add_argument("--arch", default=hp, help="architecture (tilelabel models list; "
                   "default gap-linear)")
    t.add_argument("--variant", help="architecture variant (deeplift: agcn or rgcn; cmgm: "
                   "N-LSTM, N-R-LSTM, N-BiLSTM or N-R-BiLSTM, the default; kbranch: the "
                   "Sentinel-2 resolutions, e.g. 20m+60m, default all in the data)")
    t.add_argument("--dataset", action="append", required=True, metavar="KIND:PATH",
                   help="training data; repeat to combine datasets with the same labels. "
                   "A weakly labelled set (nwpu-vhr10: box-confirmed labels only) may come "
                   "after the first and name fewer labels: the rest count as unknown")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--backbone", default=hp,
                   help="efficientnet_lite0 (the default), efficientnet_lite1 or "
                   "efficientnet_lite2 (ImageNet weights packaged), resnet50, resnet101")
    t.add_argument("--backbone-weights", help="local ImageNet weights for a ResNet backbone "
                   "(.safetensors; see docs/training.md to convert a torchvision .pth)")
    t.add_argument("--no-pretrained", action="store_true", help="start the backbone from scratch")
    t.add_argument("--epochs", type=int, default=hp, help="default 10")
    t.add_argument("--image-size", type=int, default=hp,
                   help="input side in px (default: the dataset's)")
    t.add_argument("--batch-size", type=int, default=hp, help="default 32")
    t.add_argument("--lr", type=float, default=hp, help="learning rate of the new layers "
                   "(default 1e-3; the backbone's is 0.1 x, or the recipe's backbone_lr_scale)")
    t.add_argument("--weight-decay", type=float, default=hp, help="AdamW (default 1e-4)")
    t.add_argument("--schedule", default=hp, choices=("cosine", "step", "constant"),
                   help="default cosine")
    t.add_argument("--grad-clip", type=float, default=hp,
                   help="max gradient norm (0: off; default 5)")
    t.add_argument("--weight-average", type=float, default=hp, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay "
                   "(e.g. 0.998) and validate, keep and calibrate it (default 0: off)")
    t.add_argument("--loss", default=hp,
                   choices=("bce", "weighted-bce", "imbalance-bce", "asl"), help="default bce")
    t.add_argument("--label-smoothing", type=float, default=hp, metavar="EPS",
                   help="train against targets y (1 - EPS) + EPS / 2, e.g. 0.1 (default 0)")
    t.add_argument("--patience", type=int, default=hp, help="early stopping: epochs without "
                   "a better validation mAP (default 5)")
    t.add_argument("--seed", type=int, default=hp,
                   help="seeds the new layers' weights, shuffling and augmentation "
                   "(default 0); the split stays --split-seed's")
    t.add_argument("--split-seed", type=int, default=hp,
                   help="seeds the train/val/test split (default 0): keep it fixed to "
                   "compare seeds on the same split")
    t.add_argument("--init-from", help="fine-tune from this model directory")
    t.add_argument("--refit", metavar="MODEL", help="train MODEL's recipe again on its train "
                   "and validation splits together, stopping after the epoch it kept and "
                   "taking its calibrated thresholds (the test split stays out); MODEL is kept")
    t.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace the model already in "
                   "--out (never the --init-from model)")
    t.add_argument("--freeze-backbone", action="store_true")
    t.add_argument("--allow-no-val", action="store_true", help="train even when the data "
                   "has no validation images (few corrected tiles): keep the last epoch")
    t.add_argument("--device", default=hp, choices=("auto", "cpu", "cuda"),
                   help="default auto")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument("--workers", type=int, default=hp,
                   help="DataLoader worker processes (default 0)")
    t.add_argument("--model-id", default=hp, help="name of the new model version")
    _common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="multi-label metrics of a model on a dataset")
    e.add_argument("--model", required=True, help="model directory")
    e.add_argument("--dataset", required=True, metavar="KIND:PATH")
    e.add_argument("--split", choices=("train", "val", "test"),
                   help="evaluate one split (default: every image of the dataset)")
    e.add_argument("--report", help="write all metrics as JSON to this file")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --report file")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _tta_flag(e)
    _common(e)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("graph", help="mine and draw the label co-occurrence graph of a dataset")
    g.add_argument("--dataset", required=True, metavar="KIND:PATH")
    g.add_argument("--out", required=True, help="graph JSON to write")
    g.add_argument("--png", help="also draw the graph to this PNG")
    g.add_argument("--tau", type=float, default=0.4, help="edge threshold on P(Lj|Li)")
    g.add_argument("--split", choices=("train", "val", "test"), help="mine one split only")
    g.add_argument("--overwrite", action="store_true", help="replace existing --out and --png files")
    _common(g)
    g.set_defaults(func=cmd_graph)

    c = sub.add_parser("correct", help="record an analyst's labels for tiles of a store",
                       description="Append a correction (or verification, or undo) for tiles "
                       "of an annotation store. History is kept; the latest action in force "
                       "wins.")
    c.add_argument("store", help="annotation store (.gpkg)")
    c.add_argument("--tile", action="append", help="tile id (repeatable; one action covers "
                   "every tile named)")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--labels", help="each tile's full label set, ';'-separated ('' for none)")
    what.add_argument("--add", metavar="LABEL", help="add this label to each tile, keeping "
                      "its other labels")
    what.add_argument("--remove", metavar="LABEL", help="remove this label from each tile, "
                      "keeping its other labels")
    what.add_argument("--verify", action="store_true", help="the predicted labels are right")
    what.add_argument("--undo", action="store_true", help="undo the latest action as a whole "
                      "(every tile it touched); with --tile, the latest action on those tiles")
    c.add_argument("--author", default="", help="who made the correction")
    c.add_argument("--note", default="")
    _common(c)
    c.set_defaults(func=cmd_correct)

    x = sub.add_parser("export", help="export reviewed tiles to a GeoPackage (and image chips)")
    x.add_argument("store", help="annotation store (.gpkg)")
    x.add_argument("--out", required=True, help="GeoPackage to write (layer labelled_tiles)")
    x.add_argument("--chips", help="also write each tile as a GeoTIFF chip + labels.csv here")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out file "
                   "(and --chips folder); the store itself is never replaced")
    x.add_argument("--status", default="corrected,verified",
                   help="which tiles, by status (default: corrected,verified)")
    _common(x)
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("models", help="architectures and model directories")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="every architecture this engine can build")
    _common(ml)
    ml.set_defaults(func=cmd_models_list)
    mi = msub.add_parser("info", help="what a model directory holds (labels, bands, metrics)")
    mi.add_argument("model_dir")
    _common(mi)
    mi.set_defaults(func=cmd_models_info)
    mo = msub.add_parser("export-onnx", help="make (or find) the model's ONNX graph for "
                         "ONNX Runtime; annotate does this on first use",
                         description="Export the model's network from its safetensors "
                         "weights to model.onnx beside them (or into the cache when that "
                         "folder is read-only), checked against PyTorch. Needs PyTorch.")
    mo.add_argument("model_dir")
    mo.add_argument("--force", action="store_true", help="export again even when a graph "
                    "matching the weights exists")
    _common(mo)
    mo.set_defaults(func=cmd_models_export_onnx)
    return parser


def _low_on_space(args: argparse.Namespace) -> bool:
    """Whether a folder the job writes into (its store or output) has under 1 MB free."""
    for name in ("store", "out", "attention_dir"):
        value = getattr(args, name, None)
        if value and "://" in str(value):
            continue  # a URL's space is its object store's
        folder = Path(value).parent if value else None
        while folder is not None and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder is not None and shutil.disk_usage(folder).free < 1 << 20:
            return True
    return False


def environment_error(exc: Exception, args: argparse.Namespace) -> TileLabelError | None:
    """The user-fixable cause of an OS or SQLite error (full disk, read-only file, a
    store locked by another program), as a TileLabelError; None when it is none of them."""
    text = str(exc)
    if isinstance(exc, sqlite3.Error) and _low_on_space(args):
        return TileLabelError("the disk is full: free space and run again; the store keeps "
                              "everything committed before")
    if isinstance(exc, sqlite3.DatabaseError):
        if "locked" in text or "busy" in text:
            return TileLabelError(
                "the store is locked by another program (QGIS with an open attribute table "
                "or edit session, a database browser...): save or close that, then run again")
        if "unable to open" in text:
            return TileLabelError(
                "cannot open the store: its folder is not writable, and SQLite needs to write "
                "its -wal/-shm companion files beside the store. Copy the store to a writable "
                "folder, or fix the folder's permissions")
        if "readonly" in text or "read-only" in text:
            return TileLabelError("the store is read-only (file or folder permissions, a "
                                  "read-only disk): make it writable or work on a copy")
        if "full" in text:
            return TileLabelError("the disk is full: free space and run again; the store "
                                  "keeps everything committed before")
        if "malformed" in text or "not a database" in text:
            return TileLabelError(f"the store is damaged ({text}); restore it from a backup")
        return None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TileLabelError(f"the disk is full ({exc.filename or text}): free space and run "
                              "again; files already complete are kept")
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return TileLabelError(f"cannot write {exc.filename or ''}: {exc.strerror}; choose a "
                              "writable folder or fix its permissions")
    return None


def main(argv: list[str] | None = None) -> int:
    handler: Callable = _raise_interrupt
    interrupt.clear()
    signal.signal(signal.SIGTERM, handler)  # first, so an early SIGTERM also exits 130
    try:
        args = build_parser().parse_args(argv)
    except (JobInterrupted, KeyboardInterrupt):
        return 130
    reporter = Reporter(json_lines=getattr(args, "json_progress", False))
    try:
        code = args.func(args, reporter)
        interrupt.raise_if_requested()  # a stop whose raise was swallowed is still a stop
        return code
    except (JobInterrupted, KeyboardInterrupt):
        return _interrupted(reporter, args)
    except Exception as exc:  # noqa: BLE001 - reported below, never die silently
        if interrupt.requested():
            # the stop's raise, turned into another error by the code it landed in (an
            # extension module's import reports "ImportError: initialization failed")
            return _interrupted(reporter, args)
        return _report(exc, args, reporter)


def _interrupted(reporter: Reporter, args: argparse.Namespace) -> int:
    """Exit 130, saying what a stopped job of this kind leaves behind."""
    if args.command == "train":
        kept = (f"the epochs finished before the stop are in {Path(args.out) / 'checkpoint'}: "
                "run the same command with --resume to go on")
    elif args.command in ("annotate", "correct"):
        kept = "the store keeps every tile written before the stop"
    else:
        kept = "no result was written"
    reporter.error(f"interrupted; {kept}", 130)
    return 130


def _report(exc: Exception, args: argparse.Namespace, reporter: Reporter) -> int:
    """The exit code of a failed job, its error reported in the analyst's words."""
    if isinstance(exc, (sqlite3.Error, OSError)):
        exc = environment_error(exc, args) or exc
    if not isinstance(exc, TileLabelError):
        return _internal_error(exc, args.debug, reporter)
    if args.debug:
        traceback.print_exc()
    reporter.error(str(exc), exc.exit_code)
    return exc.exit_code


def _internal_error(exc: Exception, debug: bool, reporter: Reporter) -> int:
    if debug:
        traceback.print_exception(exc)
    reporter.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug "
                   "and report it)", 1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
