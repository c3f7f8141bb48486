"""A stand-in for ``run_command`` in tests of the dialects' query logic."""

from __future__ import annotations

from dask_jobqueue._shell import CommandError, CommandResult


class RecordingRunner:
    """Answers every command from ``answer(argv)`` and records the calls.

    ``answer`` returns the command's stdout (a string), a ``CommandResult``, or an
    ``(exit_code, stderr)`` tuple for a failing command; it may also raise.
    """

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[list[str]] = []

    async def __call__(self, argv, timeout=None, **kwargs):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        result = self.answer(argv)
        if isinstance(result, tuple):
            raise CommandError(argv, result[0], "", result[1])
        if isinstance(result, str):
            return CommandResult(argv, result, "")
        return result
