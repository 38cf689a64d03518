"""The annotate job: raster -> tiles -> model -> store (+ attention GeoTIFF).

Everything that can be wrong with the input (model, raster, bands, resolution, extent,
store) is checked before the store is touched. Tiles are then streamed: worker threads
read batches ahead while the model predicts, and each batch is committed to the store
in its own transaction, so an interrupted job keeps every batch written before.

Multi-resolution models (K-Branch, ``band_groups`` in model.json) read each band group at
its own pixel size, from one stacked raster or from a folder of band files at different
resolutions (engine/infer/multires.py); ``raster`` may then name that folder.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from shapely.geometry import Polygon
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window, bounds as window_bounds

from engine.band_groups import band_groups, check_groups
from engine.data.bands import match_bands
from engine.data.raster import RasterInfo, open_raster, pixel_scaling
from engine.data.tiling import Tile, TileGrid, check_resolution, extent_window, tile_grid
from engine.defaults import DEFAULT_MODEL, MIN_VALID_FRACTION
from engine.errors import JobInterrupted, RasterError, StoreError
from engine.infer.attention_writer import AttentionFrame, AttentionWriter, write_failed
from engine.infer.multires import (BandSource, GroupedTileReader, folder_sources,
                                   reference_raster, stacked_sources)
from engine.infer.predictor_base import TilePredictor
from engine.infer.runtime import open_predictor
from engine.infer.shared_folder import check_folder, is_url
from engine.infer.tta import check_tta
from engine.infer.tile_reader import TileReader, prefetched_batches
from engine.models.spec import ModelSpec, read_spec
from engine.progress import Reporter
from engine.store import AnnotationStore, TileRecord
from engine.store.annotation_store import check_writable, remove_leftovers, use_wal
from engine.store.job_lock import StoreJobLock

# GDAL's block cache defaults to 5 % of RAM (6 GiB on a 128 GiB GPU host); tiles are read
# once in grid order, so a small cache is as fast and keeps memory bounded. Read by GDAL
# when the cache is first used; a user's own GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "256")
COMMIT_EVERY_S = 1.0


@dataclass
class AnnotateOptions:
    """Parameters of one annotate job (the CLI's flags, as data)."""

    raster: str
    store: Path
    model_dir: Path = DEFAULT_MODEL
    extent: tuple[float, float, float, float] | None = None
    extent_crs: str | None = None
    overlap: float = 0.0
    batch_size: int = 16
    device: str = "auto"
    attention_dir: Path | str | None = None  # str: an fsspec URL (with a Dask cluster)
    attention: bool = True
    bands: list[int] | None = None
    allow_gsd_mismatch: bool = False
    s2_offset: float | None = None
    workers: int | None = None  # tile-reading threads; None: 1 on CPU, 4 on CUDA
    prefetch: int = 4
    runtime: str = "auto"       # auto | torch | onnx (engine.infer.runtime)
    tta: str = "none"           # none | flips | dihedral (engine.infer.tta)
    threads: int | None = None  # ONNX Runtime compute threads; None: one per CPU core
    block_tiles: int = 256      # with a Dask cluster: tiles per task (engine/infer/cluster.py)
    min_valid: float = MIN_VALID_FRACTION  # skip tiles holding a smaller share of real data


@dataclass
class AnnotatePlan:
    """What the job will do, worked out before anything is written."""

    spec: ModelSpec
    info: RasterInfo          # the raster tiles are cut on (the finest band file of a folder)
    band_indexes: list[int]   # single-resolution models: raster band per model band
    grid: TileGrid
    window: Window
    sources: list[BandSource] | None = None  # multi-resolution models: file and band per band


def _band_file_folder(raster: str) -> bool:
    """A folder of band files (not a raster GDAL opens as a folder, e.g. an ArcInfo grid)."""
    if not Path(raster).is_dir():
        return False
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(raster):
            return False
    except RasterioIOError:
        return True


def plan_annotation(opts: AnnotateOptions, spec: ModelSpec, reporter: Reporter) -> AnnotatePlan:
    groups = band_groups(spec.arch_config)
    if groups is not None or _band_file_folder(opts.raster):
        return _plan_multires(opts, spec, reporter)
    info = open_raster(opts.raster)
    match = match_bands(spec.bands, info.descriptions, info.colorinterp, opts.bands)
    if match.assumed_order:
        reporter.log(f"the raster does not name its bands; assuming bands "
                     f"{','.join(map(str, match.indexes))} are {', '.join(spec.bands)} "
                     "(use --bands to change)", "warning")
    check_resolution(info, spec.gsd_m, opts.allow_gsd_mismatch)
    window = extent_window(info, opts.extent, opts.extent_crs)
    grid = tile_grid(info, window, spec.gsd_m, spec.tile_px, opts.overlap)
    return AnnotatePlan(spec, info, match.indexes, grid, window)


def _plan_multires(opts: AnnotateOptions, spec: ModelSpec, reporter: Reporter) -> AnnotatePlan:
    """Plan for a model reading band groups at their native resolutions."""
    groups = band_groups(spec.arch_config)
    if groups is None:
        raise RasterError(f"{opts.raster} is a folder of band files, which only a "
                          f"multi-resolution model (kbranch) reads; model {spec.model_id} "
                          f"({spec.arch}) needs one raster: stack the bands first, e.g. "
                          "gdalbuildvrt -separate stack.vrt B*.tif")
    check_groups(groups, spec.bands, spec.tile_px, spec.gsd_m)
    if Path(opts.raster).is_dir():
        if opts.bands:
            raise RasterError("--bands maps the bands of one raster; the files of a folder "
                              "are matched by band name (description or B05-style file name)")
        sources = folder_sources(Path(opts.raster), spec.bands)
    else:
        sources, assumed = stacked_sources(open_raster(opts.raster), spec.bands, opts.bands)
        if assumed:
            reporter.log(f"the raster does not name its bands; assuming bands "
                         f"{','.join(str(s.index) for s in sources)} are "
                         f"{', '.join(spec.bands)} (use --bands to change)", "warning")
    info = reference_raster(sources)
    check_resolution(info, groups[0].gsd_m, opts.allow_gsd_mismatch)
    window = extent_window(info, opts.extent, opts.extent_crs)
    grid = tile_grid(info, window, spec.gsd_m, spec.tile_px, opts.overlap)
    return AnnotatePlan(spec, info, [], grid, window, sources)


def raster_key(path: str) -> str:
    """Stable id of a raster in tile ids: file stem + hash of its absolute path."""
    absolute = str(Path(path).resolve()) if not path.startswith("/vsi") else path
    return f"{Path(path).stem}-{hashlib.sha1(absolute.encode()).hexdigest()[:8]}"


def tile_id(key: str, grid: TileGrid, tile: Tile) -> str:
    return (f"{key}:{grid.size_x}x{grid.size_y}+{grid.stride_x}x{grid.stride_y}:"
            f"{tile.grid_i}:{tile.grid_j}")


def reprojected_box(bounds: tuple[float, float, float, float], src: CRS, dst: CRS,
                    points_per_side: int = 8) -> Polygon:
    """A box of ``src`` as a polygon in ``dst``, its sides densified so that the curved
    edges of the reprojection stay close."""
    from rasterio.warp import transform

    minx, miny, maxx, maxy = bounds
    steps = np.linspace(0.0, 1.0, points_per_side, endpoint=False)
    xs = np.concatenate([minx + (maxx - minx) * steps, np.full_like(steps, maxx),
                         maxx - (maxx - minx) * steps, np.full_like(steps, minx)])
    ys = np.concatenate([np.full_like(steps, miny), miny + (maxy - miny) * steps,
                         np.full_like(steps, maxy), maxy - (maxy - miny) * steps])
    tx, ty = transform(src, dst, xs.tolist(), ys.tolist())
    return Polygon(zip(tx, ty))


def attention_folder(opts: AnnotateOptions) -> str:
    """Where the attention rasters go: ``--attention-dir`` (a folder, or with a Dask
    cluster an fsspec URL), else ``<store name>_attention`` beside the store."""
    return str(opts.attention_dir or opts.store.with_name(opts.store.stem + "_attention"))


def attention_path(opts: AnnotateOptions, run_id: str) -> Path:
    return Path(attention_folder(opts)) / f"{run_id}.tif"


def check_local_attention(opts: AnnotateOptions) -> None:
    """Without a cluster this process writes the attention GeoTIFF: into a folder."""
    if opts.attention and is_url(attention_folder(opts)):
        raise StoreError(f"--attention-dir {opts.attention_dir}: a URL is for the workers of a "
                         "Dask cluster (--cluster); on one machine give a folder")


def _open_attention(path: Path, info: RasterInfo, grid: TileGrid, labels: list[str],
                    tags: dict[str, str]) -> AttentionWriter:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return AttentionWriter(path, AttentionFrame.of(info, grid), labels, tags)
    except (RasterioError, OSError) as exc:
        raise write_failed(path, exc) from exc


def check_attention_dir(opts: AnnotateOptions) -> None:
    """The attention folder can be written (a folder, or an fsspec URL the workers can
    write and GDAL read back); StoreError naming the fix if not."""
    folder = attention_folder(opts)
    if is_url(folder):
        check_folder(folder)
        return
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"cannot write attention rasters into {folder}: {probe} is a file, "
                         "not a folder; choose another --attention-dir")
    if not os.access(probe, os.W_OK):
        raise StoreError(f"cannot write attention rasters into {folder}: not writable; "
                         "choose another --attention-dir")


def check_options(opts: AnnotateOptions) -> None:
    if opts.batch_size < 1:
        raise StoreError("--batch-size must be at least 1")
    if opts.workers is not None and opts.workers < 1:
        raise StoreError(f"--workers must be at least 1 (got {opts.workers})")
    check_tta(opts.tta)
    if not 0.0 <= opts.min_valid <= 1.0:
        raise StoreError(f"--min-valid is a share of the tile, from 0 to 1 (got "
                         f"{opts.min_valid}); 0 predicts every tile that holds any data")


def open_job_predictor(opts: AnnotateOptions, reporter: Reporter) -> TilePredictor:
    """Check the outputs can be written, then load the model (and make its ONNX graph,
    once): all before the store is touched."""
    check_writable(opts.store)
    if opts.attention:
        check_attention_dir(opts)
    reporter.stage("loading model")
    return open_predictor(opts.model_dir, opts.runtime, opts.device, opts.threads, reporter,
                          opts.tta)


@contextmanager
def job_store(opts: AnnotateOptions, labels: list[str], crs: CRS,
              reporter: Reporter) -> Iterator[AnnotationStore]:
    """The store, created or opened under this job's lock, runs that ended without
    finishing marked so."""
    with StoreJobLock(opts.store):
        remove_leftovers(opts.store)
        with AnnotationStore.create_or_open(opts.store, labels, crs) as store:
            use_wal(store.conn)
            stale = store.mark_stale_runs()
            if stale:
                reporter.log(f"{stale} earlier run(s) of this store ended without finishing "
                             "(killed or crashed); their committed tiles are kept", "warning")
            yield store


def run_annotate(opts: AnnotateOptions, reporter: Reporter) -> dict:
    """Annotate ``opts.raster`` into ``opts.store``; returns the job's result payload."""
    t_start = time.perf_counter()
    check_options(opts)
    check_local_attention(opts)
    spec = read_spec(opts.model_dir)
    plan = plan_annotation(opts, spec, reporter)
    predictor = open_job_predictor(opts, reporter)
    with job_store(opts, spec.labels, plan.info.crs, reporter) as store:
        return _annotate_into(store, opts, predictor, plan, reporter, t_start)


def _annotate_into(store: AnnotationStore, opts: AnnotateOptions, predictor: TilePredictor,
                   plan: AnnotatePlan, reporter: Reporter, t_start: float) -> dict:
    spec = predictor.spec
    params = asdict(opts)
    run_id = store.begin_run("annotate", params)
    store.register_model(spec.model_id, spec.arch, str(Path(opts.model_dir).resolve()),
                         spec.metrics, spec.parent)
    reporter.log(f"annotating {len(plan.grid)} tiles of {plan.grid.size_x}x{plan.grid.size_y} "
                 f"raster px ({spec.tile_px} px at {spec.gsd_m} m) with {spec.model_id} on "
                 f"{predictor.runtime} ({predictor.device_type})"
                 + ("" if opts.tta == "none" else f", averaging {opts.tta} views of each tile"))
    counters = {"written": 0, "skipped": 0}
    att_path = attention_path(opts, run_id)
    try:
        wrote_attention = _stream(opts, plan, local_predictions(opts, plan, predictor), store,
                                  run_id, att_path, counters, reporter)
    except (JobInterrupted, KeyboardInterrupt):
        store.finish_run(run_id, "interrupted", counters["written"], counters["skipped"],
                         "stopped by the user or a signal")
        store.close()
        raise
    except Exception as exc:
        store.finish_run(run_id, "failed", counters["written"], counters["skipped"], str(exc))
        store.close()
        raise
    result = {
        "store": str(opts.store.resolve()),
        "attention": str(att_path.resolve()) if wrote_attention else None,
        "run_id": run_id, "model_id": spec.model_id, "tiles_total": len(plan.grid),
        "tiles_written": counters["written"], "tiles_skipped_nodata": counters["skipped"],
        "crs": plan.info.crs.to_string(), "labels": spec.labels,
        "seconds": round(time.perf_counter() - t_start, 2),
        "runtime": predictor.runtime, "device": predictor.device_type,
    }
    store.finish_run(run_id, "completed", counters["written"], counters["skipped"], "",
                     {"attention": result["attention"]})
    store.close()
    return result


def _reader(opts: AnnotateOptions, plan: AnnotatePlan) -> TileReader | GroupedTileReader:
    spec, info = plan.spec, plan.info
    if plan.sources is not None:
        return GroupedTileReader(info, band_groups(spec.arch_config), plan.sources, spec.bands,
                                 spec.mean, spec.std, opts.s2_offset)
    return TileReader(info, plan.band_indexes,
                      pixel_scaling(info, plan.band_indexes, spec.bands, opts.s2_offset),
                      spec.mean, spec.std, spec.tile_px)


@dataclass
class Prediction:
    """The model's output for the tiles of one batch that hold data (``n_read``: the
    tiles read for it, nodata ones included)."""

    tiles: list[Tile]
    valid_fraction: np.ndarray
    probs: np.ndarray
    labels: list[list[str]]
    attention: np.ndarray | None
    n_read: int


@dataclass
class Checkpoint:
    """Between predictions: ``record`` runs once every tile before it is committed (a
    cluster's finished block is recorded only after its tiles)."""

    record: Callable[[], None]


class TileCommits:
    """Tiles committed in transactions of about ``COMMIT_EVERY_S`` of work: each commit is
    a disk sync (1-15 ms here, far more on a busy disk), so one per 16-tile batch cost up
    to 5 % of a run; a kill loses at most the last second of tiles, which a re-run redoes."""

    def __init__(self, store: AnnotationStore, model_id: str, run_id: str,
                 counters: dict) -> None:
        self.store, self.model_id, self.run_id, self.counters = store, model_id, run_id, counters
        self.pending: list[TileRecord] = []
        self.last = time.monotonic()

    def add(self, records: list[TileRecord]) -> None:
        self.pending += records
        if time.monotonic() - self.last >= COMMIT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.counters["written"] += self.store.write_tiles(self.pending, self.model_id,
                                                               self.run_id)
            self.pending = []
        self.last = time.monotonic()


def local_predictions(opts: AnnotateOptions, plan: AnnotatePlan, predictor: TilePredictor,
                      tiles: Iterable[Tile] | None = None) -> Iterator[Prediction]:
    """Read ``tiles`` (default: the whole grid) in batches, threads reading ahead, and
    predict the ones holding at least ``opts.min_valid`` of real data, in grid order."""
    reader = _reader(opts, plan)
    try:
        workers = opts.workers or (4 if predictor.device_type == "cuda" else 1)
        for batch in prefetched_batches(reader, iter(plan.grid if tiles is None else tiles),
                                        opts.batch_size, workers, opts.prefetch):
            keep = np.nonzero(held_enough(batch.valid_fraction, opts.min_valid))[0]
            probs, att, labels = np.zeros((0, len(plan.spec.labels)), np.float32), None, []
            if len(keep):
                probs, att = predictor(batch.take(keep))
                labels = predictor.labels_of(probs)
            yield Prediction([batch.tiles[k] for k in keep], batch.valid_fraction[keep], probs,
                             labels, att, len(batch.tiles))
    finally:
        reader.close()


def held_enough(valid_fraction: np.ndarray, min_valid: float) -> np.ndarray:
    """Which tiles hold enough real data to predict: some, and at least ``min_valid``."""
    return (valid_fraction > 0) & (valid_fraction >= min_valid)


class TileRecords:
    """The store's records of a prediction's tiles: polygon (reprojected into a
    ``store_crs`` other than the raster's), id, window, probabilities, labels."""

    def __init__(self, plan: AnnotatePlan, store_crs: CRS | None) -> None:
        info = plan.info
        self.info, self.grid = info, plan.grid
        self.store_crs = store_crs if store_crs is not None and store_crs != info.crs else None
        self.raster_crs = info.crs.to_string()
        self.key = raster_key(info.path)
        self.source = (info.path if info.path.startswith("/vsi")
                       else str(Path(info.path).resolve()))
        self.gsd = float(np.mean(info.ground_resolution_m()))

    def __call__(self, p: Prediction) -> list[TileRecord]:
        info, out = self.info, []
        for row, t in enumerate(p.tiles):
            b = window_bounds(Window(t.col, t.row, t.size_x, t.size_y), info.transform)
            shape = reprojected_box(b, info.crs, self.store_crs) if self.store_crs else None
            out.append(TileRecord(
                tile_id(self.key, self.grid, t), shape.bounds if shape else b, self.source,
                (t.col, t.row, t.size_x, t.size_y), self.gsd,
                t.is_edge(info.width, info.height), float(p.valid_fraction[row]),
                p.probs[row], p.labels[row], shape, self.raster_crs))
        return out


def _keep_predicted(commits: TileCommits) -> None:
    """After a stop or a failure elsewhere (the attention raster), commit the tiles already
    predicted; if the store itself failed, what it refused stays out."""
    try:
        commits.flush()
    except Exception:  # the job's own error is the one to report
        pass


def _stream(opts: AnnotateOptions, plan: AnnotatePlan,
            predictions: Iterator[Prediction | Checkpoint],
            store: AnnotationStore, run_id: str, att_path: Path | None, counters: dict,
            reporter: Reporter, store_crs: CRS | None = None, already: int = 0) -> bool:
    """Write every prediction (in any order) to the store and the attention raster
    ``att_path`` (None: the predictions' attention is written elsewhere, by a cluster's
    workers); True when an attention raster was written. With a ``store_crs`` other than
    the raster's, each tile's polygon is reprojected into it. ``already``: tiles of the
    grid done by an earlier run (resume), counted in the progress."""
    info, grid, spec = plan.info, plan.grid, plan.spec
    records = TileRecords(plan, store_crs)
    writer: AttentionWriter | None = None
    commits = TileCommits(store, spec.model_id, run_id, counters)
    done, total = already, len(grid)
    reporter.progress("predict", done, total)
    try:
        for p in predictions:
            if isinstance(p, Checkpoint):
                commits.flush()
                p.record()
                continue
            counters["skipped"] += p.n_read - len(p.tiles)
            commits.add(records(p))
            if p.attention is not None and opts.attention and p.tiles and att_path:
                if writer is None:
                    writer = _open_attention(att_path, info, grid, spec.labels,
                                             {"TILELABEL_RUN": run_id,
                                              "TILELABEL_MODEL": spec.model_id,
                                              "TILELABEL_STORE": str(opts.store)})
                for row, t in enumerate(p.tiles):
                    writer.write(t, p.attention[row])
            done += p.n_read
            reporter.progress("predict", done, total)
        commits.flush()
    except BaseException:
        _keep_predicted(commits)
        if writer is not None:
            writer.abandon()
        raise
    finally:
        close = getattr(predictions, "close", None)
        if close is not None:
            close()  # a generator's reader threads stop at once
    if writer is not None:
        writer.close()  # checks the file: a failed write fails the run
    return writer is not None
