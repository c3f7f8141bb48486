"""A stand-in for ``run_command`` in tests of the dialects' status steps and cancels."""

from __future__ import annotations

import asyncio

from dask_jobqueue import engine as engine_module
from dask_jobqueue._shell import CommandError, CommandResult


class RecordingRunner:
    """Answers every command from ``answer(argv)`` and records the calls.

    ``answer`` returns the command's stdout (a string), a ``CommandResult``, or an
    ``(exit_code, stderr)`` tuple for a failing command; it may also raise.
    """

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[list[str]] = []

    def sync(self, argv, timeout=None, **kwargs):
        """The same, as a stand-in for ``run_command_sync`` (submissions, exit cancels)."""
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        result = self.answer(argv)
        if isinstance(result, tuple):
            raise CommandError(argv, result[0], "", result[1])
        if isinstance(result, str):
            return CommandResult(argv, result, "")
        return result

    async def __call__(self, argv, timeout=None, **kwargs):
        return self.sync(argv, timeout=timeout, **kwargs)


class _AsyncioWithoutSleep:
    """``asyncio`` as the engine sees it, with a ``sleep`` that returns at once (the real
    ``asyncio.sleep`` stays untouched for everything else)."""

    def __getattr__(self, name):
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay, result=None):
        return result


def engine_with(job, answer, monkeypatch, submitted=(), **engine_kwargs):
    """A :class:`~dask_jobqueue.engine.BatchSystem` for ``job`` whose commands are answered by
    ``answer`` (see :class:`RecordingRunner`); returns ``(engine, runner)``.

    ``submitted``: submit-command outputs (e.g. ``"OAR_JOB_ID=22\n"``); the engine first
    submits ``job`` once per output, so it tracks those ids as live. The submissions are not
    left in ``runner.calls`` nor in ``engine.commands``. ``asyncio.sleep`` in the engine
    (pauses between cancel retries) returns at once.
    """
    runner = RecordingRunner(answer)
    monkeypatch.setattr(engine_module, "run_command", runner)
    monkeypatch.setattr(engine_module, "run_command_sync", runner.sync)
    monkeypatch.setattr(engine_module, "asyncio", _AsyncioWithoutSleep())
    engine = engine_module.BatchSystem(job, **engine_kwargs)
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
            engine.commands.clear()
    return engine, runner


def query(engine, ids):
    """Run one poll of ``engine`` for ``ids`` outside any event loop."""
    return asyncio.run(engine.query(ids))


def cancel(engine, ids):
    """Run ``engine.cancel(ids)`` outside any event loop; returns the ids left behind."""
    return asyncio.run(engine.cancel(ids))
