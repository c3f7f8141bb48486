"""Validation and formatting of user-supplied values: byte sizes, walltimes, names.

Every check raises a ``ValueError`` that names the keyword and the accepted forms, so that a
bad value is reported when the cluster is built, before anything reaches a batch system.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence

from dask.utils import parse_bytes, parse_timedelta

KIB = 2**10
MIB = 2**20
GIB = 2**30

_BYTES_FORMS = "a number of bytes or a string such as '4GB', '4GiB', '512MB', '1.5TB'"


#: Smallest ``memory`` per job accepted: less is a forgotten unit (``memory=24``), not a size.
MIN_JOB_MEMORY = MIB
#: Below this ``memory`` per job a warning is given: a Dask worker process alone uses more, so
#: its nanny may restart it again and again (0.9 accepts such sizes, e.g. ``'28MiB'``).
USUAL_JOB_MEMORY = 32 * MIB


def parse_memory(
    value: object, keyword: str = "memory", minimum: int = 1, *, allow_zero: bool = False
) -> int:
    """Return ``value`` as a number of bytes >= ``minimum`` (or zero, with ``allow_zero``), or
    raise ``ValueError``.

    NaN, infinities and sizes too large to be real (``"1e400"``) are refused, not overflowed.
    """
    if isinstance(value, bool):
        raise ValueError(f"{keyword}={value!r} is not a size: use {_BYTES_FORMS}")
    if isinstance(value, (int, float)):
        number: float = value
    elif isinstance(value, str):
        try:
            number = parse_bytes(value.strip())
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"{keyword}={value!r} is not a size: use {_BYTES_FORMS}") from None
    else:
        raise ValueError(f"{keyword}={value!r} is not a size: use {_BYTES_FORMS}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{keyword}={value!r} is not a finite size: use {_BYTES_FORMS}")
    nbytes = int(number)
    if nbytes == 0 and allow_zero:
        return 0
    if nbytes <= 0:
        raise ValueError(f"{keyword}={value!r} must be a positive size ({_BYTES_FORMS})")
    if nbytes < minimum:
        raise ValueError(
            f"{keyword}={value!r} ({nbytes} bytes) is below the minimum of "
            f"{format_size(minimum)}: did you forget the unit, e.g. '4GB'?"
        )
    return nbytes


def format_size(nbytes: int) -> str:
    """``33554432`` -> ``'32 MiB'``: a readable size for messages."""
    for suffix, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size} {suffix}"
    return f"{nbytes} bytes"


def parse_positive_int(value: object, keyword: str, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int >= 1 (or >= 0), or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{keyword}={value!r} must be a whole number")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{keyword}={value!r} must be a whole number") from None
    if isinstance(value, float) and number != value:
        raise ValueError(f"{keyword}={value!r} must be a whole number")
    lowest = 0 if allow_zero else 1
    if number < lowest:
        raise ValueError(f"{keyword}={value!r} must be >= {lowest}")
    return number


def format_memory_limit(nbytes: int) -> str:
    """Format a per-worker memory limit for ``--memory-limit`` without rounding up.

    Whole GiB are written as ``NGiB``; anything else is floored to MiB (``NMiB``), so the sum
    of the worker limits never exceeds what the job asked the batch system for.
    """
    if nbytes >= GIB and nbytes % GIB == 0:
        return f"{nbytes // GIB}GiB"
    if nbytes >= MIB:
        return f"{nbytes // MIB}MiB"
    return str(max(nbytes, 1))


def ceil_to_unit(nbytes: int, units: Sequence[tuple[str, int, int]], smallest: str) -> str:
    """Round ``nbytes`` up into the first unit whose threshold it reaches.

    ``units`` are ``(suffix, unit_size, threshold)`` from largest to smallest; ``smallest`` is
    the suffix used below every threshold (with unit size 1).
    """
    for suffix, size, threshold in units:
        if nbytes >= threshold:
            return f"{math.ceil(nbytes / size)}{suffix}"
    return f"{max(nbytes, 1)}{smallest}"


# ---------------------------------------------------------------------------- walltime

_WALLTIME_FORMS: dict[str, tuple[str, re.Pattern[str]]] = {
    "seconds": ("SECONDS", re.compile(r"^(?P<s>\d+)$")),
    "minutes": ("MINUTES", re.compile(r"^(?P<m>\d+)$")),
    "hh:mm:ss": ("HH:MM:SS", re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})$")),
    "hh:mm": ("HH:MM", re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2})$")),
    "mm:ss": ("MM:SS", re.compile(r"^(?P<m>\d+):(?P<s>\d{1,2})$")),
    "hours": ("HOURS", re.compile(r"^(?P<h>\d+)$")),
    "d-hh": ("D-HH", re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2})$")),
    "d-hh:mm": ("D-HH:MM", re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})$")),
    "d-hh:mm:ss": (
        "D-HH:MM:SS",
        re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
    ),
}


def parse_walltime(value: object, forms: Iterable[str], keyword: str = "walltime") -> int:
    """Return the walltime in seconds if ``value`` matches one of ``forms``.

    ``forms`` are keys of the table above, in the order the scheduler tries them (Slurm reads a
    bare number as minutes, PBS and SGE as seconds). Raise ``ValueError`` naming the keyword and
    the forms this scheduler accepts.
    """
    forms = list(forms)
    text = (
        str(value).strip()
        if isinstance(value, (str, int)) and not isinstance(value, bool)
        else None
    )
    if text:
        for form in forms:
            match = _WALLTIME_FORMS[form][1].match(text)
            if match:
                parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
                if (
                    parts.get("m", 0) >= 60
                    and "h" in parts
                    or parts.get("s", 0) >= 60
                    and ("m" in parts)
                ):
                    continue
                return (
                    parts.get("d", 0) * 86400
                    + parts.get("h", 0) * 3600
                    + parts.get("m", 0) * 60
                    + parts.get("s", 0)
                )
    accepted = ", ".join(_WALLTIME_FORMS[f][0] for f in forms)
    raise ValueError(
        f"{keyword}={value!r} is not a walltime this scheduler accepts: use {accepted}"
    )


# ---------------------------------------------------------------------------- names & directives

_NAME_RE = re.compile(
    r"^(?:[A-Za-z0-9_.+@%:-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+$"
)


def check_name(value: object, keyword: str) -> str:
    """Validate a job or worker name: letters, digits, ``_.+@%:-`` and ``$VAR``/``${VAR}``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(
            f"{keyword}={value!r} is not a valid name: use letters, digits and _ . + @ % : -, "
            "optionally with $VARIABLE references expanded by the job's shell"
        )
    return value


def check_directive_value(value: object, keyword: str) -> str:
    """Reject values that would break out of a one-line header directive."""
    text = str(value)
    if "\n" in text or "\r" in text or "\x00" in text:
        raise ValueError(f"{keyword}={value!r} must be a single line (no newline characters)")
    return text


def check_text(value: object, keyword: str, *, allow_empty: bool = False) -> str:
    """A one-line string (a number is accepted and turned into text, a list is not)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{keyword}={value!r} must be a string, not {type(value).__name__}")
    text = check_directive_value(value, keyword)
    if not allow_empty and not text.strip():
        raise ValueError(f"{keyword}={value!r} must not be empty (leave it unset instead)")
    return text


#: Characters refused in single-word directive values (queue, account, project, job_mem...):
#: the batch system would split the value at whitespace or quotes, and none of these
#: characters belongs in a queue or account name. Refusing them also keeps shell
#: metacharacters out of header lines, which OAR turns into command-line arguments.
_WORD_FORBIDDEN = re.compile(r"[\s'\"`;&|<>$\\(){}*?!#~^]")


def check_word(value: object, keyword: str) -> str:
    """A single word for a header directive: no whitespace, quotes or shell metacharacters."""
    text = check_text(value, keyword)
    bad = _WORD_FORBIDDEN.search(text)
    if bad:
        raise ValueError(
            f"{keyword}={value!r} must be a single word without whitespace, quotes or shell "
            f"metacharacters (found {bad.group()!r}); the batch system would split or "
            "misread it"
        )
    return text


_RESOURCE_LIST_FORBIDDEN = re.compile(r"[\s'\"\\#]")


def check_resource_list(value: object, keyword: str) -> str:
    """A resource list written after a ``-l`` directive (``select=1:ncpus=4``,
    ``h_vmem=4G,h_rt=1:00:00``): one argument, so no blank, quote, backslash or ``#``."""
    text = check_text(value, keyword)
    bad = _RESOURCE_LIST_FORBIDDEN.search(text)
    if bad:
        raise ValueError(
            f"{keyword}={value!r} must be one resource list without blanks, quotes, "
            f"backslashes or '#' (found {bad.group()!r}), e.g. 'select=1:ncpus=8' or "
            "'h_vmem=4G,mem_free=4G'; put other options in job_extra_directives"
        )
    return text


def check_bool(value: object, keyword: str) -> bool:
    """``True`` or ``False`` only: ``"no"`` is a non-empty string, hence true, in Python."""
    if not isinstance(value, bool):
        raise ValueError(f"{keyword}={value!r} must be True or False")
    return value


def parse_duration(value: object, keyword: str) -> float:
    """A positive duration in seconds from a number or a string such as ``'60s'``, ``'5m'``."""
    if isinstance(value, bool):
        raise ValueError(f"{keyword}={value!r} is not a duration")
    if isinstance(value, (int, float)) and not value > 0:
        raise ValueError(f"{keyword}={value!r} must be a positive duration")
    try:
        # dask types it str | float | timedelta; it also reads any numbers.Number, and what
        # it cannot read raises one of the errors caught here
        seconds = parse_timedelta(value, "seconds")  # type: ignore[call-overload]
    except (KeyError, ValueError, TypeError, OverflowError):
        raise ValueError(
            f"{keyword}={value!r} is not a duration: use seconds or a string such as "
            "'60s', '5m', '1h'"
        ) from None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{keyword}={value!r} must be a positive duration")
    return float(seconds)


def check_shebang(value: object, keyword: str = "shebang") -> str:
    """The first line of a job script: must start with ``#!``."""
    text = check_text(value, keyword)
    if not text.startswith("#!"):
        raise ValueError(f"{keyword}={value!r} must start with '#!', e.g. '#!/usr/bin/env bash'")
    return text


def check_directive_list(values: Iterable[object], keyword: str) -> list[str]:
    """Validate each entry of a list of directives (``job_extra_directives`` & co)."""
    if isinstance(values, Mapping):
        raise ValueError(
            f"{keyword} must be a list of directive strings, e.g. ['--exclusive'], not a dict "
            f"({values!r}): a dict of submit-file commands is HTCondor's form only"
        )
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{keyword} must be a list of strings, not {values!r}")
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{keyword} entries must be strings, got {v!r} in {list(values)!r}")
    return [check_directive_value(v, keyword) for v in values]


def check_string_list(values: object, keyword: str) -> list[str]:
    """Accept a list/tuple of strings or numbers (``None`` means empty)."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{keyword} must be a list of strings, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"{keyword} entries must be strings, got {v!r} in {list(values)!r}")
    return [str(v) for v in values]


# ---------------------------------------------------------------------------- header values

#: Characters a directive value may hold without quotes on every scheduler.
_PLAIN_DIRECTIVE_VALUE = re.compile(r"^[A-Za-z0-9_./=@%+,:-]+$")


def directive_value(
    value: object,
    keyword: str,
    scheduler: str,
    *,
    escaped: str = "",
    refused: Mapping[str, str] | None = None,
    shown: object = None,
) -> str:
    """``value`` as ONE argument of a header directive line (``#SBATCH -o <value>``).

    For submit commands that read a double-quoted part of a directive line as one argument
    (each dialect records what its command does, next to its directive code). A value of
    plain characters is written as it is; any other is written in double quotes, each
    character of ``escaped`` preceded by a backslash. ``refused`` maps characters this
    scheduler cannot carry (a string of them) to the reason: a value holding one, a newline
    or nothing at all raises ``ValueError`` naming ``keyword`` and the value (``shown``, if
    given, is the value the user wrote).
    """
    shown = value if shown is None else shown
    text = check_text(value, keyword)
    found, reasons = [], []
    for chars, reason in (refused or {}).items():
        hits = [c for c in chars if c in text]
        if hits:
            found += hits
            reasons.append(reason)
    if found:
        listed = " ".join(repr(c) for c in found)
        raise ValueError(
            f"{keyword}={shown!r} contains {listed}, which {scheduler} cannot take in a "
            f"header directive: {'; '.join(reasons)}. Choose a value without it."
        )
    if _PLAIN_DIRECTIVE_VALUE.match(text):
        return text
    return '"' + "".join("\\" + c if c in escaped else c for c in text) + '"'


# ---------------------------------------------------------------------------- directories


def world_writable_component(path: str) -> str | None:
    """The first of ``path`` and its existing parents that every user may write to and that
    has no sticky bit, or ``None``.

    In such a directory anyone can delete, rename or replace what another user put there
    (the sticky bit of ``/tmp`` stops exactly that). Components that do not exist yet are
    skipped: the directory is created later, under its nearest existing parent.
    """
    current = os.path.abspath(path)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            mode = None
        if (
            mode is not None
            and stat.S_ISDIR(mode)
            and mode & stat.S_IWOTH
            and not mode & stat.S_ISVTX
        ):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def check_shared_directory(value: object, keyword: str, what: str) -> str:
    """Refuse a directory (or a parent of it) that every user may write to without a sticky
    bit: other users could replace ``what`` there. ``$VARIABLES`` are left to the job's
    shell, so a value with one is checked only up to its first ``$``. Returns the text."""
    text = check_text(value, keyword)
    path = os.path.expanduser(text)
    if "$" in path:
        head = path.split("$", 1)[0]
        if not head:
            return text  # decided on the compute node: nothing to check here
        path = head if head.endswith("/") else os.path.dirname(head) or "."
    open_to_all = world_writable_component(path)
    if open_to_all is not None:
        where = "it" if open_to_all == os.path.abspath(path) else f"its parent {open_to_all!r}"
        raise ValueError(
            f"{keyword}={value!r}: {where} can be written by every user and has no sticky "
            f"bit, so anyone could delete or replace {what} there. Use a directory that "
            "only you (or your group) can write to, or set the sticky bit (chmod +t)."
        )
    return text
