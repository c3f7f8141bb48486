import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# the one version is dask_jobqueue.__version__ (read, not imported: the dependencies may be
# missing when this runs)
version = re.search(
    r'^__version__ = "([^"]+)"$', (here / "dask_jobqueue" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="dask_jobqueue",
    version=version,
    description="Deploy Dask on job-queuing systems: PBS, Slurm, SGE, LSF, Moab, OAR, HTCondor",
    long_description=(here / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["dask_jobqueue", "dask_jobqueue.*"]),
    package_data={"dask_jobqueue": ["jobqueue.yaml", "py.typed"]},
    include_package_data=True,
    install_requires=[
        "dask>=2024.1.0",
        "distributed>=2024.1.0,<2027",  # private SpecCluster methods are overridden
        "pyyaml>=6",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-asyncio>=0.23",
            "cryptography>=42",
            "numpy>=1.24",
            "pandas>=2",
            "ruff>=0.5",
            "mypy>=1.10",
            "docutils>=0.20",
        ],
        # Builds the manual: sphinx-build -W -b html docs <outdir> (alabaster comes with Sphinx).
        "docs": [
            "sphinx>=7",
        ],
    },
    entry_points={"console_scripts": ["dask-jobqueue=dask_jobqueue.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Distributed Computing",
    ],
)
