"""Scale-out: Dask clients for embarrassingly parallel work.

>>> from sciml.distributed import dask_client
>>> with dask_client(workers=2) as client:                 # LocalCluster, 2 processes
...     futures = client.map(pow, range(4), [2] * 4)
>>> with dask_client(scheduler="tcp://10.0.0.1:8786"):    # an existing scheduler
...     ...

``workers=1`` (or None) and no scheduler mean in-process work for the callers that take
these options (:func:`parallel` tells which).
"""

from .cluster import check_workers, dask_client, parallel

__all__ = ["check_workers", "dask_client", "parallel"]
