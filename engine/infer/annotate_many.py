"""Annotating many rasters into one store: one job, one run row, per-raster outcomes.

Each raster is planned before anything is written (a raster that cannot be annotated -
unreadable, wrong bands, far from the model's resolution - is reported and skipped, the
others go on); the model is loaded once; the rasters are then annotated one after the
other through the single-raster pipeline (engine/infer/annotate.py), each into its own
attention GeoTIFF. The store has one CRS: the first raster's, or ``store_crs``; tiles of
a raster in another CRS are cut in that raster's own grid and their polygons reprojected
into the store's, the raster's CRS kept per tile (``raster_crs``).

Each raster's outcome is committed to the run's ``outputs`` as soon as it ends, so a job
killed half way leaves the finished rasters recorded: running the same command again
skips every raster this model already annotated to the end (resume).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from engine.errors import JobInterrupted, TileLabelError
from engine.infer.annotate import (AnnotateOptions, AnnotatePlan, _stream, check_options,
                                   job_store, local_predictions, open_job_predictor,
                                   plan_annotation)
from engine.models.spec import read_spec
from engine.progress import Reporter
from engine.store import AnnotationStore


@dataclass
class RasterOutcome:
    """What became of one raster of the job."""

    raster: str
    outcome: str            # completed | failed | skipped | interrupted
    model_id: str = ""
    tiles_written: int = 0
    tiles_skipped_nodata: int = 0
    attention: str | None = None
    message: str = ""


def source_key(raster: str) -> str:
    """How a raster is recognised again on a re-run: its resolved path (GDAL /vsi paths
    as given)."""
    return raster if raster.startswith("/vsi") else str(Path(raster).resolve())


def parse_store_crs(text: str | None) -> CRS | None:
    if not text:
        return None
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise TileLabelError(f"--store-crs {text!r} is not a CRS ({exc}); give e.g. "
                             "EPSG:32631") from exc


def _plan_all(rasters: list[str], opts: AnnotateOptions, spec, reporter: Reporter
              ) -> tuple[list[tuple[str, AnnotatePlan]], list[RasterOutcome]]:
    plans, failed = [], []
    for raster in rasters:
        try:
            plans.append((raster, plan_annotation(replace(opts, raster=raster), spec, reporter)))
        except (TileLabelError, RasterioError) as exc:
            reporter.log(f"{raster}: skipped: {exc}", "warning")
            failed.append(RasterOutcome(source_key(raster), "failed", spec.model_id,
                                        message=str(exc)))
    return plans, failed


def run_annotate_many(rasters: list[str], opts: AnnotateOptions, reporter: Reporter,
                      store_crs: str | None = None, cluster: str | None = None) -> dict:
    """Annotate every raster of ``rasters`` into ``opts.store``; the job's result payload
    (``failed`` counts the rasters that could not be annotated). ``cluster``: the workers
    of a Dask cluster read and predict (engine/infer/cluster.py)."""
    if cluster is None:
        return _run(rasters, opts, reporter, store_crs, None)
    from engine.infer.cluster import cluster_client

    with cluster_client(cluster) as client:
        reporter.log(f"Dask cluster {cluster}: {len(client.scheduler_info()['workers'])} "
                     "workers")
        return _run(rasters, opts, reporter, store_crs, client)


def _run(rasters: list[str], opts: AnnotateOptions, reporter: Reporter,
         store_crs: str | None, client) -> dict:
    t_start = time.perf_counter()
    if opts.extent is not None:
        raise TileLabelError("--extent applies to one raster; with several rasters, clip "
                             "them first (gdal_translate -projwin) or run one job per raster")
    check_options(opts)
    spec = read_spec(opts.model_dir)
    wanted_crs = parse_store_crs(store_crs)
    plans, outcomes = _plan_all(rasters, opts, spec, reporter)
    if not plans:
        raise TileLabelError(f"none of the {len(rasters)} rasters can be annotated: "
                             + "; ".join(f"{o.raster}: {o.message}" for o in outcomes[:3]))
    # with a cluster too: its ONNX graph is made here, once, before the workers load it
    predictor = open_job_predictor(opts, reporter)
    crs = _store_crs(opts.store, wanted_crs) or plans[0][1].info.crs
    with job_store(opts, spec.labels, crs, reporter) as store:
        store_crs_now = store.crs()
        reporter.log(f"annotating {len(plans)} rasters into {opts.store} "
                     f"({store_crs_now.to_string()})")
        done = store.completed_rasters(spec.model_id)
        run_id = store.begin_run("annotate", {**asdict(opts), "rasters": rasters,
                                              "store_crs": store_crs})
        store.register_model(spec.model_id, spec.arch, str(Path(opts.model_dir).resolve()),
                             spec.metrics, spec.parent)
        for index, (raster, plan) in enumerate(plans):
            try:
                outcome = _annotate_one(index, raster, plan, opts, predictor, store,
                                        run_id, store_crs_now, done, reporter, client)
            except (JobInterrupted, KeyboardInterrupt):
                store.finish_run(run_id, "interrupted", sum(o.tiles_written for o in outcomes),
                                 0, "stopped by the user or a signal",
                                 {"rasters": [asdict(o) for o in outcomes]})
                raise
            outcomes.append(outcome)
            store.record_outputs(run_id, {"rasters": [asdict(o) for o in outcomes]})
            reporter.progress("rasters", len(outcomes), len(rasters))  # overall
        return _finish(store, run_id, outcomes, spec, store_crs_now, t_start, predictor)


def _store_crs(store: Path, wanted: CRS | None) -> CRS | None:
    """The CRS the tiles go into: an existing store's (``wanted`` must agree), else
    ``wanted``."""
    if not Path(store).exists():
        return wanted
    with AnnotationStore.open(store) as existing:
        crs = existing.crs()
    if wanted is not None and wanted != crs:
        raise TileLabelError(f"{store} holds its tiles in {crs.to_string()}, not "
                             f"{wanted.to_string()} (--store-crs); drop --store-crs or "
                             "write to a new store")
    return crs


def _annotate_one(index: int, raster: str, plan: AnnotatePlan, opts: AnnotateOptions,
                  predictor, store: AnnotationStore, run_id: str, crs: CRS, done: set[str],
                  reporter: Reporter, client=None) -> RasterOutcome:
    key = source_key(raster)
    if key in done:
        reporter.log(f"{raster}: already annotated to the end by {plan.spec.model_id}; skipped")
        return RasterOutcome(key, "skipped", plan.spec.model_id,
                             message="already annotated by this model (an earlier run)")
    folder = opts.attention_dir or opts.store.with_name(opts.store.stem + "_attention")
    att_path = Path(folder) / f"{run_id}-{index:03d}-{Path(raster).stem}.tif"
    counters = {"written": 0, "skipped": 0}
    reporter.log(f"annotating {raster} ({len(plan.grid)} tiles)")
    try:
        one = replace(opts, raster=raster)
        wrote = _stream(one, plan, _predictions(one, plan, predictor, client), store, run_id,
                        att_path, counters, reporter, store_crs=crs)
    except (TileLabelError, RasterioError, OSError) as exc:
        reporter.log(f"{raster}: failed: {exc}", "warning")
        return RasterOutcome(key, "failed", plan.spec.model_id, counters["written"],
                             counters["skipped"], message=str(exc))
    return RasterOutcome(key, "completed", plan.spec.model_id, counters["written"],
                         counters["skipped"], str(att_path.resolve()) if wrote else None)


def _predictions(opts: AnnotateOptions, plan: AnnotatePlan, predictor, client):
    if client is None:
        return local_predictions(opts, plan, predictor)
    from engine.infer.cluster import cluster_predictions

    return cluster_predictions(client, opts, plan)


def _finish(store: AnnotationStore, run_id: str, outcomes: list[RasterOutcome], spec,
            crs: CRS, t_start: float, predictor) -> dict:
    written = sum(o.tiles_written for o in outcomes)
    skipped = sum(o.tiles_skipped_nodata for o in outcomes)
    failed = [o for o in outcomes if o.outcome == "failed"]
    message = (f"{len(failed)} of {len(outcomes)} rasters failed: "
               + "; ".join(f"{Path(o.raster).name}: {o.message}" for o in failed[:5])
               if failed else "")
    outputs = {"rasters": [asdict(o) for o in outcomes]}
    store.finish_run(run_id, "completed" if not failed else "completed with failures",
                     written, skipped, message, outputs)
    return {"store": str(store.path.resolve()), "run_id": run_id, "model_id": spec.model_id,
            "rasters": outputs["rasters"], "failed": len(failed),
            "tiles_written": written, "tiles_skipped_nodata": skipped,
            "crs": crs.to_string(), "labels": spec.labels,
            "seconds": round(time.perf_counter() - t_start, 2),
            "runtime": predictor.runtime, "device": predictor.device_type}
