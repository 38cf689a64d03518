"""Annotating on a Dask cluster: the workers read and predict, this process writes.

``--cluster local:N`` starts a LocalCluster of N worker processes on this machine;
``--cluster ADDRESS`` (``tcp://host:8786``) connects to a running scheduler (started by
``dask scheduler`` + ``dask worker``, dask-jobqueue or dask-kubernetes; docs/scaling.md).
Each raster's tile grid is cut into blocks of ``block_tiles`` tiles (``--cluster-block``;
256: enough to amortise a task, few enough to balance the workers); a block is one task:
a worker plans the raster once, loads the model once (both kept per worker process), reads
the block's tiles and returns their predictions. The client streams the results into the
store as they complete, in any order (GeoPackage has one writer: the client); a tile id is
written by upsert, so a block a worker started before dying and that Dask recomputed
elsewhere is never written twice.

The workers must see the rasters and the model folder at the same paths as the client (a
shared file system, or the same machine). Nothing of Dask is imported without
``--cluster``.
"""
from __future__ import annotations

import io
import logging
import threading
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from typing import Iterator

from engine.errors import TileLabelError
from engine.infer.annotate import (AnnotateOptions, AnnotatePlan, Prediction, local_predictions,
                                   plan_annotation)
from engine.infer.predictor_base import TilePredictor
from engine.models.spec import read_spec
from engine.progress import Reporter

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
    return _cached(("model", str(opts.model_dir), opts.runtime, opts.device, opts.threads),
                   lambda: open_predictor(opts.model_dir, opts.runtime, opts.device,
                                          opts.threads or 1, _quiet()))


def _worker_plan(opts: AnnotateOptions) -> AnnotatePlan:
    key = ("plan", opts.raster, str(opts.model_dir), tuple(opts.bands or ()), opts.overlap,
           opts.allow_gsd_mismatch, opts.s2_offset)
    return _cached(key, lambda: plan_annotation(opts, read_spec(opts.model_dir), _quiet()))


def predict_block(opts: AnnotateOptions, start: int, stop: int) -> list[Prediction]:
    """Tiles ``start``..``stop`` of the raster's grid, read and predicted (a task)."""
    plan = _worker_plan(opts)
    tiles = islice(iter(plan.grid), start, stop)
    return list(local_predictions(replace(opts, workers=1), plan, _worker_predictor(opts), tiles))


# -- on the client ------------------------------------------------------------------------
def cluster_predictions(client, opts: AnnotateOptions, plan: AnnotatePlan
                        ) -> Iterator[Prediction]:
    """Every tile's prediction, computed by the cluster's workers, as blocks complete."""
    from dask.distributed import as_completed

    n, block = len(plan.grid), max(1, opts.block_tiles)
    futures = [client.submit(predict_block, opts, a, min(a + block, n), pure=False,
                             retries=TASK_RETRIES) for a in range(0, n, block)]
    try:
        for future in as_completed(futures):
            yield from future.result()
    finally:
        client.cancel(futures)
