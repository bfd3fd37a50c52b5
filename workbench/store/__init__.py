"""The routing store: schema, in-memory datasets, selections, and zarr I/O."""
