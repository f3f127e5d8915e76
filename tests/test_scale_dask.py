"""EM for the RMM on a Dask cluster (docs/scaling.md): the same fit as in one process, and a clear error without Dask.

The cluster is a ``distributed.LocalCluster`` of 2 worker processes with 1 thread each. The sums
are taken in another order (per worker, then across workers), so the comparison has a tolerance:
``1e-12`` relative in float64 (measured differences are ~1e-15).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from drmm_ref import rmm, scale
from drmm_ref.rmm.em import EmptyComponentWarning

from ._helpers import host
from .test_rmm_stream import _data_and_start, assert_same_fit


def test_without_dask_the_error_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` raise ImportError
    _, images, _, start = _data_and_start(0, multi=False, padded=False)
    with pytest.raises(ImportError, match=r'pip install "drmm-ref\[scale\]"'):
        rmm.fit(images, init=start, client="tcp://127.0.0.1:1")
    # and the default path needs nothing more
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rmm.fit(images, init=start, max_iter=1, warn=False)


def test_pairwise_sum_adds_in_a_balanced_tree():
    calls = []

    def add(a, b):
        calls.append((a, b))
        return a + b

    assert scale.pairwise_sum([1, 2, 3, 4, 5], add) == 15
    assert calls[:2] == [(1, 2), (3, 4)]  # adjacent pairs first
    with pytest.raises(ValueError, match="empty"):
        scale.pairwise_sum([])


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                           worker_dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _fit(images, start, labels, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyComponentWarning)
        return rmm.fit(images, init=start, labels=labels, method=method, max_iter=4, tol=0.0, warn=False, **kw)


@pytest.mark.slow
def test_workers_run_this_checkout(client):
    import drmm_ref

    where = client.run(lambda: __import__("drmm_ref").__file__)
    assert len(where) == 2 and set(where.values()) == {drmm_ref.__file__}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("supervised", [False, True])
def test_dask_fit_equals_the_single_process_fit(client, method, supervised):
    for seed in (0, 1):
        _, images, classes, start = _data_and_start(seed, multi=True, padded=bool(seed), nonuniform=True, n=29)
        labels = classes if supervised else None
        whole = _fit(images, start, labels, method, learn_nuisance=True)
        for chunk in (3, 29):
            assert_same_fit(whole, _fit(images, start, labels, method, learn_nuisance=True, client=client,
                                        chunk_size=chunk))


@pytest.mark.slow
def test_dask_array_blocks_and_reseeding(client):
    """A dask array keeps its blocks on the workers; re-seeding picks the same worst examples as in memory."""
    da = pytest.importorskip("dask.array")
    for seed in range(40):
        _, images, _, start = _data_and_start(seed, multi=True, padded=False, n=13)
        t = host(start.templates).copy()
        t[0, 0] = 50.0  # a component far from the data: empty at once
        start = start.replace(templates=t)
        whole = _fit(images, start, None, "hard", reseed_empty=True)
        if whole[1].reseeded:
            break
    else:
        pytest.fail("no seed produced a re-seed: the test exercised nothing")
    blocks = da.from_array(host(images), chunks=(4, -1, -1, -1))
    assert_same_fit(whole, _fit(blocks, start, None, "hard", reseed_empty=True, client=client))


@pytest.mark.slow
def test_dask_pass_sends_statistics_not_posteriors(client):
    from drmm_ref.rmm.stream import DaskPass

    _, images, classes, start = _data_and_start(2, multi=True, padded=False, n=40)
    p = DaskPass(client, images, classes, hard=False, chunk_size=5)
    try:
        start = p.prepare(start)
        stats = p(start)
        rec = p.history[-1]
        assert stats.count == 40 and rec["chunks"] == 8 and rec["workers"] == 2
        # one partial sum is the model's size, whatever the chunk: K M (|G| + C k^2) float64 and a few scalars
        K, M, C, k = start.num_classes, start.num_subtemplates, start.channels, start.kernel
        model_size = 8 * (K * M * (np.prod(start.grid_shape) + C * k * k) + K + np.prod(start.grid_shape))
        assert model_size <= rec["stats_bytes"] <= model_size + 2048
    finally:
        p.close()
    with pytest.raises(TypeError, match="client must be a distributed.Client or a scheduler address"):
        rmm.fit(images, init=start, client=3)


@pytest.mark.slow
def test_scheduler_address_string(client):
    _, images, classes, start = _data_and_start(4, multi=False, padded=False, n=10)
    whole = _fit(images, start, classes, "soft")
    assert_same_fit(whole, _fit(images, start, classes, "soft", client=client.scheduler.address))
