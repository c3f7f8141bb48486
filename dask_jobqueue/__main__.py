"""``python -m dask_jobqueue``: the same as the ``dask-jobqueue`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
