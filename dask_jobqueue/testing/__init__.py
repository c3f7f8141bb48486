"""Testing helpers for dask_jobqueue (batch-scheduler emulators live in :mod:`.emulator`)."""
