"""One module per batch system: everything this package knows about it, as a
:class:`~dask_jobqueue.dialect.Dialect` value named ``DIALECT`` plus its pure parsers.

Dialect modules import the standard library and the package's pure modules only (``dialect``,
``tags``, ``tracker``, ``tracking``, ``_values``): never dask's distributed, the engine, the
job or the cluster. The registry (:mod:`dask_jobqueue.registry`) lists them.
"""
