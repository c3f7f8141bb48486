"""Cancelling: ids chunked below the argument limit, retries, and which ids were left.

A cancel command that fails for real (not only "already gone") is retried; if it still
fails and it named several ids, its ids are settled a few at a time: the chunk is split in
halves, each tried once, and so on down to single ids, so one id the batch system refuses
does not leave the others of its command behind. The splitting is bounded (a batch system
refusing everything costs a few dozen commands more, not one per id), and only follows
answers: a command that timed out or could not run is not split (each piece would wait as
long again).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Generator, Iterable, Sequence

from .._shell import CommandError, only_complaints_matching
from ..dialect import natural_key
from .context import EngineContext, first_line

logger = logging.getLogger(__name__)

#: Bytes of job ids per cancel command (the kernel's limit is far higher; some wrappers aren't).
_CANCEL_ARGV_BUDGET = 64 * 1024
_CANCEL_MAX_IDS = 1000
#: Cancels of more ids than this are split into commands in a thread.
_CHUNK_IN_THREAD = 2000

#: Yields each piece (ids) to try in one command, is sent that command's real failure (or
#: ``None``: cancelled), returns the ids left behind.
Settlement = Generator[list[str], CommandError | None, list[str]]


def answered(error: CommandError) -> bool:
    """Whether a failed command ran and answered (an exit status), rather than timing out
    or not starting at all."""
    return error.returncode is not None


def settle(chunk: list[str]) -> Settlement:
    """Which pieces of a cancel ``chunk`` to try after its command was refused, until each
    id is cancelled or refused alone; returns the ids left behind.

    Halves are tried one command each; a refused piece of one id is left. At most
    ``4 * ceil(log2(len(chunk))) + 4`` commands: enough to isolate a few refused ids among
    thousands, bounded when every command fails. A piece whose command did not answer
    (:func:`answered`) stops the splitting: what is not settled yet is left.
    """
    budget = 4 * math.ceil(math.log2(max(len(chunk), 2))) + 4
    pending = [chunk] if len(chunk) > 1 else []
    left = [] if pending else list(chunk)
    while pending:
        piece = pending.pop(0)
        halves = [piece[: len(piece) // 2], piece[len(piece) // 2 :]]
        for k, half in enumerate(halves):
            if budget <= 0:
                left += half
                continue
            budget -= 1
            failure = yield half
            if failure is None:
                continue
            if not answered(failure):
                return left + [i for h in halves[k:] for i in h] + [i for p in pending for i in p]
            if len(half) == 1:
                left += half
            else:
                pending.append(half)
    return left


class Canceller:
    """Cancels jobs in as few commands as the argument limit allows.

    Parameters
    ----------
    context : EngineContext
        The engine's shared state (cancelled ids leave its live ids).
    timeout : float
        Seconds before a cancel command is killed (with its process group).
    attempts : int
        Tries of a failing cancel command before its ids are settled one piece at a time.
    """

    def __init__(self, context: EngineContext, timeout: float, attempts: int):
        self.context = context
        self.timeout = timeout
        self.attempts = attempts

    # ------------------------------------------------------------------ planning

    def chunks(self, job_ids: Sequence[str]) -> list[list[str]]:
        """The ids of each cancel command: at most ``cancel_max_ids`` arguments, where the
        tasks of one array joined into a range (``65[3-5].server``) are one argument, and
        below the argument-length budget."""
        ctx = self.context
        limit = min(_CANCEL_MAX_IDS, ctx.dialect.cancel_max_ids)
        support = ctx.template.array_support_for(ctx.facts)
        if support is not None and len(job_ids) > limit:
            job_ids = sorted(job_ids, key=natural_key)  # tasks of one array side by side

        def joins(previous: str, job_id: str) -> bool:
            # tasks sorted by index: a task that joins the previous one's range adds no argument
            return support is not None and len(support.cancel_args([previous, job_id])) == 1

        chunks: list[list[str]] = [[]]
        size = arguments = 0
        for job_id in job_ids:
            adds = 0 if chunks[-1] and joins(chunks[-1][-1], job_id) else 1
            if chunks[-1] and (
                size + len(job_id) + 1 > _CANCEL_ARGV_BUDGET or arguments + adds > limit
            ):
                chunks.append([])
                size = arguments = 0
                adds = 1
            chunks[-1].append(job_id)
            size += len(job_id) + 1
            arguments += adds
        return [c for c in chunks if c]

    def arguments(self, chunk: Sequence[str]) -> list[str]:
        """The arguments of the cancel command for ``chunk``: tasks of one array as ranges
        where the batch system takes them."""
        ctx = self.context
        support = ctx.template.array_support_for(ctx.facts)
        return support.cancel_args(chunk) if support is not None else list(chunk)

    def plan(self, job_ids: Sequence[str]) -> list[tuple[list[str], list[str]]]:
        """Each cancel command for ``job_ids`` as (its arguments, the ids they cancel)."""
        return [(self.arguments(chunk), chunk) for chunk in self.chunks(list(job_ids))]

    def failed(self, exc: CommandError) -> bool:
        """True unless every complaint of the cancel command only says a job is gone."""
        return not only_complaints_matching(exc, self.context.dialect.cancel_gone_pattern)

    # ------------------------------------------------------------------ running

    async def _try(self, piece: list[str]) -> CommandError | None:
        """Run one cancel command for ``piece``; its real failure, else ``None`` (the ids
        are released)."""
        ctx = self.context
        argv = ctx.template.cancel_argv(self.arguments(piece))
        try:
            await ctx.run("cancel", argv, self.timeout)
        except CommandError as exc:
            if self.failed(exc):
                return exc
        ctx.release(piece)
        return None

    def _try_sync(self, piece: list[str]) -> CommandError | None:
        ctx = self.context
        argv = ctx.template.cancel_argv(self.arguments(piece))
        try:
            ctx.run_sync("cancel", argv, self.timeout)
        except CommandError as exc:
            if self.failed(exc):
                return exc
        ctx.release(piece)
        return None

    async def cancel(self, job_ids: Iterable[str], attempts: int | None = None) -> list[str]:
        """Cancel ``job_ids``; the ids that could not be cancelled (they stay live)."""
        ids = list(dict.fromkeys(job_ids))
        attempts = self.attempts if attempts is None else attempts
        if len(ids) > _CHUNK_IN_THREAD:  # sorting 10,000s of ids: not on the loop
            chunks = await asyncio.get_running_loop().run_in_executor(None, self.chunks, ids)
        else:
            chunks = self.chunks(ids)
        left: list[str] = []
        for chunk in chunks:
            error = await self._try(chunk)
            for attempt in range(1, attempts):
                if error is None:
                    break
                logger.info("Cancel command failed, retrying: %s", first_line(error))
                await self.context.runner.sleep(0.5 * 2 ** (attempt - 1))
                error = await self._try(chunk)
            if error is None:
                continue
            lost = list(chunk)
            if answered(error):
                steps = settle(chunk)
                try:
                    piece = next(steps)
                    while True:
                        failure = await self._try(piece)
                        error = failure or error  # the last refusal, naming the ids left
                        piece = steps.send(failure)
                except StopIteration as done:
                    lost = done.value
            _warn_left(lost, attempts, error)
            left += lost
        return left

    def cancel_sync(self, job_ids: Iterable[str]) -> list[str]:
        """Blocking :meth:`cancel` with one try per command (for exit and threads)."""
        left: list[str] = []
        for chunk in self.chunks(sorted(set(job_ids))):
            error = self._try_sync(chunk)
            if error is None:
                continue
            lost = list(chunk)
            if answered(error):
                steps = settle(chunk)
                try:
                    piece = next(steps)
                    while True:
                        failure = self._try_sync(piece)
                        error = failure or error
                        piece = steps.send(failure)
                except StopIteration as done:
                    lost = done.value
            _warn_left(lost, 1, error)
            left += lost
        return left

    def cancel_untracked_sync(self, job_ids: Sequence[str]) -> list[str]:
        """Cancel jobs this engine did not submit (blocking), holding them live until the
        cancel is confirmed (so the exit finalizer tries again); the ids left."""
        self.context.hold(job_ids)
        self.cancel_sync(job_ids)
        return sorted(set(job_ids) & self.context.live_ids)


def _warn_left(left: list[str], attempts: int, error: CommandError) -> None:
    if left:
        logger.warning(
            "Could not cancel job(s) %s after %d attempt(s); they may still be queued or "
            "running (another try at interpreter exit): %s",
            " ".join(left),
            attempts,
            error,
        )
