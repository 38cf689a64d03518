"""The ``tilelabel`` command (also ``python -m engine.cli``).

Exit codes: 0 success; 2 bad input (one ``error: ...`` line on stderr, no traceback
unless --debug); 130 interrupted (Ctrl-C or SIGTERM), the store left consistent;
1 an unexpected internal error. With --json-progress, stdout carries only the JSON
events of the job protocol (DESIGN.md).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable

from engine.errors import JobInterrupted, TileLabelError
from engine.progress import Reporter


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise JobInterrupted(f"stopped by signal {signal.Signals(signum).name}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json-progress", action="store_true",
                   help="print one JSON event per line on stdout (job protocol) and nothing else")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


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


def cmd_annotate(args: argparse.Namespace, reporter: Reporter) -> int:
    from engine.infer.annotate import AnnotateOptions, run_annotate

    opts = AnnotateOptions(
        raster=args.raster, store=Path(args.out), model_dir=Path(args.model),
        extent=_extent(args.extent) if args.extent else None, extent_crs=args.extent_crs,
        overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        attention_dir=Path(args.attention_dir) if args.attention_dir else None,
        attention=not args.no_attention, bands=_bands(args.bands),
        allow_gsd_mismatch=args.allow_gsd_mismatch, s2_offset=args.s2_offset,
        workers=args.workers)
    result = run_annotate(opts, reporter)
    reporter.result(result)
    if not reporter.json_lines:
        print(_annotate_summary(result))
    return 0


def _annotate_summary(r: dict) -> str:
    lines = [f"annotated {r['tiles_written']} tiles ({r['tiles_skipped_nodata']} nodata tiles "
             f"skipped) in {r['seconds']} s with model {r['model_id']}",
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


def cmd_models_info(args: argparse.Namespace, reporter: Reporter) -> int:
    from dataclasses import asdict

    from engine.models.modelfile import load_model

    _, spec = load_model(Path(args.model_dir))
    info = asdict(spec)
    info.pop("label_embeddings", None)
    info.get("training", {}).pop("train_images", None)
    if reporter.json_lines:
        reporter.result({"model": info})
    else:
        print(f"model {spec.model_id} ({spec.arch}): {spec.description}")
        print(f"  input: {len(spec.bands)} bands {', '.join(spec.bands)}, {spec.tile_px} px "
              f"tiles at {spec.gsd_m} m/px ({spec.tile_px * spec.gsd_m:.1f} m on the ground)")
        print(f"  labels ({len(spec.labels)}): {', '.join(spec.labels)}")
        for split, m in spec.metrics.items():
            figures = "  ".join(f"{k} {v:.3f}" for k, v in m.items()
                                if isinstance(v, float))
            print(f"  {split}: {figures}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.infer.annotate import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="tilelabel", description=(
        "TileLabel engine: multi-label annotation of aerial and satellite imagery."))
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("annotate", help="label every tile of a raster extent into a GeoPackage store",
                       description="Cut RASTER into model tiles (in ground units), predict "
                       "every label per tile, and write the tiles to a GeoPackage store plus a "
                       "per-label attention GeoTIFF beside it.")
    a.add_argument("raster", help="any GDAL raster (GeoTIFF, COG, JP2, VRT)")
    a.add_argument("--out", required=True, help="annotation store (.gpkg), created or updated")
    a.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory (default: %(default)s)")
    a.add_argument("--extent", nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"),
                   help="annotate only this extent (default: the whole raster)")
    a.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326 (default: the raster's)")
    a.add_argument("--overlap", type=float, default=0.0, help="tile overlap fraction in [0, 0.9)")
    a.add_argument("--batch-size", type=int, default=16, help="tiles per model batch")
    a.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    a.add_argument("--attention-dir", help="folder for the attention GeoTIFF "
                   "(default: <store name>_attention beside the store)")
    a.add_argument("--no-attention", action="store_true", help="do not write attention rasters")
    a.add_argument("--bands", help="raster band numbers feeding the model's bands, in model "
                   "order, e.g. 3,2,1 (default: matched by band name)")
    a.add_argument("--allow-gsd-mismatch", action="store_true",
                   help="annotate even when the raster's resolution is far from the model's")
    a.add_argument("--s2-offset", type=float, help="Sentinel-2 L2A BOA_ADD_OFFSET (e.g. -1000) "
                   "when the raster's metadata does not carry it")
    a.add_argument("--workers", type=int, help="tile-reading threads (default: 1 on CPU, "
                   "4 with CUDA)")
    _common(a)
    a.set_defaults(func=cmd_annotate)

    m = sub.add_parser("models", help="architectures and model directories")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="every architecture this engine can build")
    _common(ml)
    ml.set_defaults(func=cmd_models_list)
    mi = msub.add_parser("info", help="what a model directory holds (labels, bands, metrics)")
    mi.add_argument("model_dir")
    _common(mi)
    mi.set_defaults(func=cmd_models_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = Reporter(json_lines=getattr(args, "json_progress", False))
    handler: Callable = _raise_interrupt
    signal.signal(signal.SIGTERM, handler)
    try:
        return args.func(args, reporter)
    except TileLabelError as exc:
        if args.debug:
            traceback.print_exc()
        reporter.error(str(exc), exc.exit_code)
        return exc.exit_code
    except (JobInterrupted, KeyboardInterrupt):
        reporter.error("interrupted; the store keeps every tile written before the stop", 130)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: report, never die silently
        traceback.print_exc() if args.debug else None
        reporter.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug "
                       "and report it)", 1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
