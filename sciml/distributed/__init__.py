"""Scale-out: Dask clients for embarrassingly parallel work.

>>> from sciml.distributed import dask_client
>>> with dask_client(workers=2) as client:                 # LocalCluster, 2 processes
...     futures = client.map(pow, range(4), [2] * 4)
>>> with dask_client(cluster="tcp://10.0.0.1:8786"):      # an existing scheduler
...     ...
>>> with dask_client(cluster="slurm", workers=16,          # 16 workers in SLURM jobs
...                  settings={"queue": "cpu", "cores": 8, "memory": "16GB", "walltime": "02:00:00"}):
...     ...

``cluster="local"`` with ``workers=1`` (or None) means in-process work for the callers that
take these options (:attr:`ClusterSpec.in_process` tells which).
:func:`job_script` renders a SLURM/PBS job script without submitting it.
"""

from .cluster import ClusterSpec, cluster_spec, dask_client, job_script

__all__ = ["ClusterSpec", "cluster_spec", "dask_client", "job_script"]
