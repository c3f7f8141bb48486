"""A stand-in command runner for tests of the dialects' status steps, submissions and cancels."""

from __future__ import annotations

import asyncio

from dask_jobqueue._shell import CommandError, CommandResult, CommandRunner
from dask_jobqueue.engine import BatchSystem


class RecordingRunner(CommandRunner):
    """Answers every command from ``answer(argv)`` and records the calls; pauses between
    tries return at once.

    ``answer`` returns the command's stdout (a string), a ``CommandResult``, or an
    ``(exit_code, stderr)`` tuple for a failing command; it may also raise. ``stdins`` holds
    the stdin of every command (``None`` for most; ``bsub < script`` reads its script).
    """

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[list[str]] = []
        self.stdins: list[str | None] = []
        self.pauses: list[float] = []

    def run_sync(self, argv, *, stdin=None, timeout=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        self.stdins.append(stdin)
        result = self.answer(argv)
        if isinstance(result, tuple):
            raise CommandError(argv, result[0], "", result[1])
        if isinstance(result, str):
            return CommandResult(argv, result, "")
        return result

    async def run(self, argv, *, stdin=None, timeout=None):
        return self.run_sync(argv, stdin=stdin, timeout=timeout)

    async def sleep(self, seconds):
        self.pauses.append(seconds)

    def sleep_sync(self, seconds):
        self.pauses.append(seconds)


def engine_with(job, answer, submitted=(), **engine_kwargs):
    """A :class:`~dask_jobqueue.engine.BatchSystem` for ``job`` whose commands are answered by
    ``answer`` (see :class:`RecordingRunner`); returns ``(engine, runner)``.

    ``submitted``: submit-command outputs (e.g. ``"OAR_JOB_ID=22\n"``); the engine first
    submits ``job`` once per output, so it tracks those ids as live. The submissions are not
    left in ``runner.calls`` nor in ``engine.commands``. Pauses between retries take no time
    (they are recorded in ``runner.pauses``).
    """
    runner = RecordingRunner(answer)
    engine = BatchSystem(job, runner=runner, **engine_kwargs)
    if submitted:
        outputs = iter(submitted)
        runner.answer = lambda argv: next(outputs)

        async def submit_all():
            for _ in submitted:
                await engine.submit(job)

        try:
            asyncio.run(submit_all())
        finally:
            runner.answer = answer
            runner.calls.clear()
            runner.stdins.clear()
            runner.pauses.clear()
            engine.commands.clear()
    return engine, runner


def query(engine, ids):
    """Run one poll of ``engine`` for ``ids`` outside any event loop."""
    return asyncio.run(engine.query(ids))


def cancel(engine, ids):
    """Run ``engine.cancel(ids)`` outside any event loop; returns the ids left behind."""
    return asyncio.run(engine.cancel(ids))
