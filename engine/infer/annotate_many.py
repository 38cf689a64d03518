"""Annotating many rasters into one store: one job, one run row, per-raster outcomes.

Each raster is planned before anything is written (a raster that cannot be annotated -
unreadable, wrong bands, far from the model's resolution - is reported and skipped, the
others go on); the model is loaded once; the rasters are then annotated one after the
other through the single-raster pipeline (engine/infer/annotate.py), each into its own
attention GeoTIFF. The store has one CRS: the first raster's, or ``store_crs``; tiles of
a raster in another CRS are cut in that raster's own grid and their polygons reprojected
into the store's, the raster's CRS kept per tile (``raster_crs``).

Each raster's outcome is committed to the run's ``outputs`` as soon as it ends (on a
cluster each block of tiles as well), so a job killed half way leaves the finished
rasters recorded: running the same command again skips every raster this model already
annotated to the end, and on a cluster the finished blocks of the raster it stopped in
(resume).
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from engine.errors import JobInterrupted, TileLabelError
from engine.infer.annotate import (AnnotateOptions, AnnotatePlan, _stream, attention_folder,
                                   check_attention_dir, check_local_attention, check_options,
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


class RunLedger:
    """What the run has finished so far, committed to its ``outputs`` as it goes: each
    raster's outcome, and on a cluster the finished blocks of rasters not yet complete."""

    def __init__(self, store: AnnotationStore, run_id: str, model_id: str,
                 outcomes: list[RasterOutcome]) -> None:
        self.store, self.run_id, self.model_id = store, run_id, model_id
        self.outcomes = outcomes
        self.blocks: dict[str, dict] = {}

    def raster_done(self, outcome: RasterOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.outcome == "completed":
            self.blocks.pop(outcome.raster, None)
        self._commit()

    def block_done(self, raster: str, layout: dict, index: int, piece: str | None) -> None:
        entry = self.blocks.setdefault(raster, {"model_id": self.model_id, "layout": layout,
                                                "done": {}})
        entry["done"][str(index)] = piece
        self._commit()

    def outputs(self) -> dict:
        return {"rasters": [asdict(o) for o in self.outcomes], "blocks": self.blocks}

    def _commit(self) -> None:
        self.store.record_outputs(self.run_id, self.outputs())


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
    if cluster is None or _all_done(rasters, opts):
        return _run(rasters, opts, reporter, store_crs, None)  # nothing for a cluster to do
    if opts.attention:
        check_attention_dir(opts)  # before a cluster is started or reached
    from engine.infer.cluster import cluster_client

    with cluster_client(cluster) as client:
        reporter.log(f"Dask cluster {cluster}: {len(client.scheduler_info()['workers'])} "
                     "workers")
        return _run(rasters, opts, reporter, store_crs, client)


def _all_done(rasters: list[str], opts: AnnotateOptions) -> bool:
    """Every raster already annotated to the end by this model (an earlier run's store)."""
    if not Path(opts.store).is_file():
        return False
    try:
        with AnnotationStore.open(opts.store) as store:
            done = store.completed_rasters(read_spec(opts.model_dir).model_id)
    except (TileLabelError, sqlite3.Error):
        return False  # the job itself reports what is wrong with the store or model
    return all(source_key(r) in done for r in rasters)


def _run(rasters: list[str], opts: AnnotateOptions, reporter: Reporter,
         store_crs: str | None, client) -> dict:
    t_start = time.perf_counter()
    if opts.extent is not None:
        raise TileLabelError("--extent applies to one raster; with several rasters, clip "
                             "them first (gdal_translate -projwin) or run one job per raster")
    check_options(opts)
    if client is None:
        check_local_attention(opts)
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
        ledger = RunLedger(store, run_id, spec.model_id, outcomes)
        for index, (raster, plan) in enumerate(plans):
            try:
                outcome = _annotate_one(index, raster, plan, opts, predictor, ledger,
                                        store_crs_now, done, reporter, client)
            except (JobInterrupted, KeyboardInterrupt):
                store.finish_run(run_id, "interrupted", sum(o.tiles_written for o in outcomes),
                                 0, "stopped by the user or a signal", ledger.outputs())
                raise
            ledger.raster_done(outcome)
            reporter.progress("rasters", len(outcomes), len(rasters))  # overall
        return _finish(ledger, spec, store_crs_now, t_start, predictor)


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
                  predictor, ledger: RunLedger, crs: CRS, done: set[str],
                  reporter: Reporter, client=None) -> RasterOutcome:
    key = source_key(raster)
    if key in done:
        reporter.log(f"{raster}: already annotated to the end by {plan.spec.model_id}; skipped")
        return RasterOutcome(key, "skipped", plan.spec.model_id,
                             message="already annotated by this model (an earlier run)")
    name = f"{ledger.run_id}-{index:03d}-{Path(raster).stem}"
    counters = {"written": 0, "skipped": 0}
    reporter.log(f"annotating {raster} ({len(plan.grid)} tiles)")
    one = replace(opts, raster=raster)
    try:
        if client is None:
            att_path = Path(attention_folder(one)) / f"{name}.tif"
            wrote = _stream(one, plan, local_predictions(one, plan, predictor), ledger.store,
                            ledger.run_id, att_path, counters, reporter, store_crs=crs)
            attention = str(att_path.resolve()) if wrote else None
        else:
            attention = _on_cluster(client, one, plan, key, name, ledger, counters, reporter,
                                    crs)
    except (TileLabelError, RasterioError, OSError) as exc:
        reporter.log(f"{raster}: failed: {exc}", "warning")
        return RasterOutcome(key, "failed", plan.spec.model_id, counters["written"],
                             counters["skipped"], message=str(exc))
    return RasterOutcome(key, "completed", plan.spec.model_id, counters["written"],
                         counters["skipped"], attention)


def _on_cluster(client, opts: AnnotateOptions, plan: AnnotatePlan, key: str, name: str,
                ledger: RunLedger, counters: dict, reporter: Reporter, crs: CRS) -> str | None:
    from engine.infer.cluster import ClusterRaster, annotate_on_cluster

    job = ClusterRaster(opts, plan, key, name, ledger.run_id)
    return annotate_on_cluster(client, job, ledger.store,
                               lambda layout, k, piece: ledger.block_done(key, layout, k, piece),
                               counters, reporter, crs)


def _finish(ledger: RunLedger, spec, crs: CRS, t_start: float, predictor) -> dict:
    store, run_id, outcomes = ledger.store, ledger.run_id, ledger.outcomes
    written = sum(o.tiles_written for o in outcomes)
    skipped = sum(o.tiles_skipped_nodata for o in outcomes)
    failed = [o for o in outcomes if o.outcome == "failed"]
    message = (f"{len(failed)} of {len(outcomes)} rasters failed: "
               + "; ".join(f"{Path(o.raster).name}: {o.message}" for o in failed[:5])
               if failed else "")
    outputs = ledger.outputs()
    store.finish_run(run_id, "completed" if not failed else "completed with failures",
                     written, skipped, message, outputs)
    return {"store": str(store.path.resolve()), "run_id": run_id, "model_id": spec.model_id,
            "rasters": outputs["rasters"], "failed": len(failed),
            "tiles_written": written, "tiles_skipped_nodata": skipped,
            "crs": crs.to_string(), "labels": spec.labels,
            "seconds": round(time.perf_counter() - t_start, 2),
            "runtime": predictor.runtime, "device": predictor.device_type}
