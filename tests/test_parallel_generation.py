"""Generation on Dask workers: the same file as in-process, bounded tasks in flight, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sciml import datasets
from sciml.cli.app import main
from sciml.datasets.generators import _on_dask, create
from sciml.distributed import dask_client
from sciml.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def client():
    """A real 2-process LocalCluster (as ``workers=2`` makes), shared through its address."""
    with dask_client(workers=2) as c:
        yield c


def assert_same_file(a, b):
    """Every variable (data, coordinates, done, residual) equal exactly; attrs equal but ``created``."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa) == set(fb)
        for name in fa:
            assert fa[name].dtype == fb[name].dtype, name
            np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name)
        attrs_a = {k: v for k, v in fa.attrs.items() if k != "created"}
        attrs_b = {k: v for k, v in fb.attrs.items() if k != "created"}
        assert attrs_a.keys() == attrs_b.keys()
        for k in attrs_a:
            assert np.array_equal(attrs_a[k], attrs_b[k]), k


def test_two_local_workers_write_the_serial_file(tmp_path):
    # 12 samples > the 8 tasks kept in flight for 2 workers: results arrive and are written out of order
    kw = dict(n=12, resolution=33, seed=5, progress=False)
    serial = datasets.generate("darcy", out=tmp_path / "serial.h5", **kw)
    parallel = datasets.generate("darcy", out=tmp_path / "parallel.h5", workers=2, **kw)
    assert_same_file(serial, parallel)


def test_workers_of_a_running_scheduler_write_the_serial_file(tmp_path, client, capsys):
    kw = dict(n=10, resolution=20, seed=2, dim=2, dtype="float64")
    serial = datasets.generate("poisson", out=tmp_path / "serial.h5", progress=False, **kw)
    parallel = datasets.generate("poisson", out=tmp_path / "parallel.h5", progress=True,
                                 scheduler=client.scheduler.address, **kw)
    assert_same_file(serial, parallel)
    assert capsys.readouterr().out == ""  # the progress bar goes to stderr


def test_tasks_in_flight_stay_bounded_and_small_samples_are_batched(client):
    """At most 4 tasks per worker thread run ahead of the caller; tiny samples share tasks."""
    seen: list[int] = []

    class Counting:
        def __init__(self):
            self.batches: list[list[int]] = []
            self.most_ahead = 0

        def submit(self, fn, name, config, seed, batch, **kwargs):
            self.batches.append(batch)
            ahead = sum(not set(b) <= set(seen) for b in self.batches)
            self.most_ahead = max(self.most_ahead, ahead)
            return client.submit(fn, name, config, seed, batch, **kwargs)

        def __getattr__(self, name):  # scheduler_info, cancel
            return getattr(client, name)

    counting = Counting()
    config = {"resolution": 6, "dim": 2}
    for i, arrays, residual, method in _on_dask(counting, "poisson", config, 0, list(range(60))):
        seen.append(i)
        expected, _ = create("poisson", **config).sample(0, i)
        np.testing.assert_array_equal(arrays["u"], expected["u"])
    assert sorted(seen) == list(range(60))
    assert sorted(i for b in counting.batches for i in b) == list(range(60))
    # 4 x 2 workers queued or running, plus the finished one being handed over
    assert counting.most_ahead <= 8 + 1
    assert max(map(len, counting.batches)) > 1 and len(counting.batches) < 60  # ~0.1 ms samples


def test_a_failed_solve_on_a_worker_raises_its_data_error(tmp_path, client):
    out = tmp_path / "x.h5"
    with pytest.raises(DataError, match="choose another solver"):
        datasets.generate("darcy", n=3, resolution=33, solver="cg", tol=1e-15, out=out, progress=False,
                          scheduler=client.scheduler.address)
    assert not out.exists() and not (tmp_path / "x.h5.partial").exists()  # nothing done, nothing kept


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "workers must be a positive integer"),
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, "either workers"),
    ({"scheduler": "127.0.0.1:8786"}, "must be an address such as tcp://"),
])
def test_bad_workers_or_scheduler_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        datasets.generate("darcy", n=2, resolution=9, out=tmp_path / "x.h5", progress=False, **kwargs)
    assert not (tmp_path / "x.h5.partial").exists()


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
            datasets.generate("darcy", n=2, resolution=9, out=tmp_path / "x.h5", progress=False,
                              scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "x.h5.partial").exists()


def test_cli_scheduler_option(tmp_path, client, capsys):
    out = tmp_path / "cli.h5"
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "darcy", "--n", "3", "-s", "17", "--seed", "1", "--out", str(out),
              "--scheduler", client.scheduler.address, "--no-progress"])
    assert exit_.value.code == 0, capsys.readouterr().err
    assert_same_file(out, datasets.generate("darcy", n=3, resolution=17, seed=1, out=tmp_path / "ref.h5", progress=False))
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "darcy", "--n", "3", "--out", str(tmp_path / "y.h5"), "-w", "2", "--scheduler", "tcp://x:1"])
    assert exit_.value.code == 1 and "either workers" in capsys.readouterr().err


def test_batch_size_aims_at_a_fifth_of_a_second_of_work_per_task():
    from sciml.datasets.generators import _BatchSize

    size = _BatchSize(threads=2)
    assert size(1000) == 1  # nothing measured yet
    size.observe(count=1, seconds=0.01, nbytes=1000)
    assert size(1000) == 20  # 0.2 s / 10 ms
    assert size(40) == 10  # the last tasks spread over both workers: 40 / (2 x 2)
    size.observe(count=1, seconds=0.01, nbytes=4 * 2**20)
    assert size(1000) == 4  # at most 16 MB of results per task
    size.observe(count=2, seconds=2.0, nbytes=1000)
    assert size(1000) == 1  # slow samples go one by one
