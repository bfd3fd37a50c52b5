"""The routing store: schema, in-memory datasets, selections, and zarr I/O.

The ``ds.routing`` accessor lives above this layer (``workbench.accessor``): the store imports nothing
from analysis or graphs (docs/architecture.md).
"""
