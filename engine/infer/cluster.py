"""Annotating on a Dask cluster: the workers read, predict and write attention; this
process writes the store.

``--cluster local:N`` starts a LocalCluster of N worker processes on this machine;
``--cluster ADDRESS`` (``tcp://host:8786``) connects to a running scheduler (started by
``dask scheduler`` + ``dask worker``, dask-jobqueue or dask-kubernetes; docs/scaling.md).
Each raster's tile grid is cut into blocks of whole tile rows, about ``block_tiles``
tiles each (``--cluster-block``; 256: enough to amortise a task, few enough to balance
the workers); a block is one task: a worker plans the raster once, loads the model once
(both kept per worker process), reads and predicts the block's tiles, writes their
attention as one GeoTIFF piece into the attention folder (a shared folder or an fsspec
URL) and returns the predictions. The client streams them into the store as blocks
complete, in any order (GeoPackage has one writer: the client), commits each finished
block to the run's outputs, and when the raster is done writes a VRT joining its pieces:
the one attention raster per raster the store names. A tile id is written by upsert, so
a block a worker started before dying and that Dask recomputed elsewhere is never
written twice; a re-run of a killed job skips the blocks it committed (their pieces are
reused).

The workers must see the rasters and the model folder at the same paths as the client (a
shared file system, or the same machine). Nothing of Dask is imported without
``--cluster``.
"""
from __future__ import annotations

import io
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from engine.data.tiling import TileGrid
from engine.errors import TileLabelError
from engine.infer.annotate import (AnnotateOptions, AnnotatePlan, Checkpoint, Prediction,
                                   _stream, attention_folder, local_predictions,
                                   plan_annotation)
from engine.infer.attention_writer import AttentionFrame, AttentionWriter, write_attention_vrt
from engine.infer.predictor_base import TilePredictor
from engine.infer.shared_folder import exists, gdal_path, join, local_file
from engine.models.spec import read_spec
from engine.progress import Reporter
from engine.store import AnnotationStore

TASK_RETRIES = 2    # a task whose worker raised is tried again elsewhere (deaths: Dask's own)


def parse_cluster(spec: str) -> int | str:
    """``local:N`` -> N worker processes; anything else is a scheduler address."""
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise TileLabelError(f"--cluster {spec}: give the number of local workers, e.g. "
                                 "local:4")
        return n
    if "://" not in spec and ":" not in spec:
        raise TileLabelError(f"--cluster {spec}: give local:N or a scheduler address such as "
                             "tcp://host:8786")
    return spec


@contextmanager
def cluster_client(spec: str) -> Iterator[object]:
    """A dask.distributed Client for ``--cluster``, shut down afterwards (a LocalCluster
    with it)."""
    target = parse_cluster(spec)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise TileLabelError("--cluster needs Dask distributed, which this engine was "
                             "installed without: pip install 'tilelabel[cluster]'") from exc
    cluster = None
    try:
        if isinstance(target, int):
            cluster = LocalCluster(n_workers=target, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(target, timeout="30s")
    except OSError as exc:
        raise TileLabelError(f"cannot reach the Dask scheduler {spec} ({exc}); check the "
                             "address and that the scheduler runs") from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# -- on the workers: one plan per raster and one model per process ------------------------
_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, make):
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _quiet() -> Reporter:
    return Reporter(json_lines=True, stream=io.StringIO())


def _worker_predictor(opts: AnnotateOptions) -> TilePredictor:
    from engine.infer.runtime import open_predictor

    # ONNX Runtime on one thread per task: Dask's worker threads run tasks side by side
    return _cached(("model", str(opts.model_dir), opts.runtime, opts.device, opts.threads,
                    opts.tta),
                   lambda: open_predictor(opts.model_dir, opts.runtime, opts.device,
                                          opts.threads or 1, _quiet(), opts.tta))


def _worker_plan(opts: AnnotateOptions) -> AnnotatePlan:
    key = ("plan", opts.raster, str(opts.model_dir), tuple(opts.bands or ()), opts.overlap,
           opts.allow_gsd_mismatch, opts.s2_offset)
    return _cached(key, lambda: plan_annotation(opts, read_spec(opts.model_dir), _quiet()))


@dataclass(frozen=True)
class Block:
    """One task: grid rows ``rows`` of a raster's tile grid."""

    index: int
    rows: range


@dataclass
class BlockResult:
    index: int
    predictions: list[Prediction]   # attention left out: it is in the piece
    piece: str | None               # the attention piece written, None without attention


def row_blocks(grid: TileGrid, block_tiles: int) -> list[Block]:
    """The grid cut into blocks of whole tile rows, about ``block_tiles`` tiles each."""
    per = max(1, round(block_tiles / len(grid.j_range)))
    rows = grid.i_range
    return [Block(k, rows[a:a + per]) for k, a in enumerate(range(0, len(rows), per))]


def block_layout(grid: TileGrid, blocks: list[Block]) -> dict:
    """What identifies the blocks on a re-run: the same grid cut the same way."""
    return {"tile": [grid.size_x, grid.size_y], "stride": [grid.stride_x, grid.stride_y],
            "rows": [grid.i_range.start, grid.i_range.stop],
            "cols": [grid.j_range.start, grid.j_range.stop], "block_rows": len(blocks[0].rows)}


def predict_block(opts: AnnotateOptions, block: Block, piece: str | None,
                  tags: dict[str, str]) -> BlockResult:
    """The block's tiles read and predicted, their attention written to ``piece`` (a task)."""
    failure = None
    try:
        return _predict_block(opts, block, piece, tags)
    except TileLabelError as exc:
        failure = type(exc)(str(exc))
    raise failure  # outside the handler: no chained GDAL error, which cannot travel to the
    #                client (it does not unpickle); the message names the problem


def _predict_block(opts: AnnotateOptions, block: Block, piece: str | None,
                   tags: dict[str, str]) -> BlockResult:
    plan = _worker_plan(opts)
    predictions = list(local_predictions(replace(opts, workers=1), plan,
                                         _worker_predictor(opts),
                                         plan.grid.tiles_in_rows(block.rows)))
    written = None
    if piece is not None and any(p.attention is not None and p.tiles for p in predictions):
        _write_piece(piece, plan, block.rows, predictions, tags)
        written = piece
    for p in predictions:
        p.attention = None
    return BlockResult(block.index, predictions, written)


def _write_piece(piece: str, plan: AnnotatePlan, rows: range, predictions: list[Prediction],
                 tags: dict[str, str]) -> None:
    frame = AttentionFrame.of(plan.info, plan.grid)
    with local_file(piece) as path:
        writer = AttentionWriter(path, frame, plan.spec.labels, tags, rows)
        try:
            for p in predictions:
                for row, tile in enumerate(p.tiles):
                    writer.write(tile, p.attention[row])
        except BaseException:
            writer.abandon()
            raise
        writer.close()


# -- on the client ------------------------------------------------------------------------
@dataclass
class ClusterRaster:
    """One raster of a many-raster job, as the client runs it on the cluster."""

    opts: AnnotateOptions
    plan: AnnotatePlan
    key: str            # how the store knows the raster (engine/infer/annotate_many.py)
    name: str           # its attention raster's name, without extension
    run_id: str


def annotate_on_cluster(client, job: ClusterRaster, store: AnnotationStore,
                        commit_block: Callable[[dict, int, str | None], None], counters: dict,
                        reporter: Reporter, store_crs) -> str | None:
    """Annotate one raster on the cluster into ``store``, skipping the blocks an earlier
    run committed; ``commit_block(layout, index, piece)`` records each finished block.
    Returns the location of the raster's attention VRT (None without attention)."""
    opts, plan = job.opts, job.plan
    blocks = row_blocks(plan.grid, opts.block_tiles)
    layout = block_layout(plan.grid, blocks)
    folder = attention_folder(opts)
    pieces = _reusable(store.completed_blocks(plan.spec.model_id, job.key, layout), opts)
    todo = [b for b in blocks if b.index not in pieces]
    if len(todo) < len(blocks):
        reporter.log(f"{job.key}: {len(blocks) - len(todo)} of {len(blocks)} blocks done by an "
                     "earlier run; skipped")
    tags = {"TILELABEL_RUN": job.run_id, "TILELABEL_MODEL": plan.spec.model_id,
            "TILELABEL_STORE": str(opts.store)}

    def piece_of(block: Block) -> str | None:
        return (join(folder, job.name, f"block-{block.index:05d}.tif") if opts.attention
                else None)

    def committed(result: BlockResult) -> None:
        pieces[result.index] = result.piece
        commit_block(layout, result.index, result.piece)

    already = sum(len(b.rows) for b in blocks if b.index in pieces) * len(plan.grid.j_range)
    _stream(opts, plan, _cluster_predictions(client, opts, todo, piece_of, tags, committed),
            store, job.run_id, None, counters, reporter, store_crs, already)
    written = [(blocks[k].rows, gdal_path(p)) for k, p in sorted(pieces.items()) if p]
    if not opts.attention or not written:
        return None
    vrt = join(folder, job.name + ".vrt")
    with local_file(vrt) as path:
        write_attention_vrt(path, AttentionFrame.of(plan.info, plan.grid), plan.spec.labels,
                            tags, written)
    return vrt


def _reusable(done: dict[int, str | None], opts: AnnotateOptions) -> dict[int, str | None]:
    """Earlier blocks whose attention piece is still there (all of them without attention)."""
    return {k: p for k, p in done.items() if not opts.attention or (p and exists(p))}


def _cluster_predictions(client, opts: AnnotateOptions, blocks: list[Block], piece_of,
                         tags: dict[str, str], committed: Callable[[BlockResult], None]
                         ) -> Iterator[Prediction | Checkpoint]:
    """The blocks' predictions as they complete, each block followed by a checkpoint that
    calls ``committed`` once the block's tiles are in the store."""
    from dask.distributed import as_completed

    futures = [client.submit(predict_block, opts, b, piece_of(b), tags, pure=False,
                             retries=TASK_RETRIES) for b in blocks]
    try:
        for future in as_completed(futures):
            result = future.result()
            yield from result.predictions
            yield Checkpoint(lambda result=result: committed(result))
    finally:
        client.cancel(futures)
