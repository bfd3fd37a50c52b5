"""The routing store: schema, in-memory datasets, selections, and zarr I/O.

Importing the package registers the ``ds.routing`` accessor on xarray Datasets.
"""

from workbench.store import accessor as _accessor  # noqa: F401  (registers ds.routing)
