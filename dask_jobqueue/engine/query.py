"""Asking the batch system: the dialect's status steps of a poll, and the tag listing."""

from __future__ import annotations

import asyncio
import getpass
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .._shell import CommandError
from ..dialect import StatusStep
from ..tags import JobTag
from ..tracking import JobStatus
from .context import EngineContext, first_line

logger = logging.getLogger(__name__)

#: Status output longer than this (characters) is parsed in a thread (about 2,000 lines).
_PARSE_IN_THREAD = 64 * 1024


@dataclass(frozen=True)
class PollAnswer:
    """What one poll of the status steps learned.

    ``statuses``: the ids some step reported; ``denied``: ids no step reported and which a
    step's command explicitly did not know (it failed for them, see
    ``StatusStep.usable_failure``). Other missing ids were merely not listed.
    """

    statuses: dict[str, JobStatus]
    denied: frozenset[str] = frozenset()


class StatusQuery:
    """Runs the dialect's status steps for a set of ids.

    Parameters
    ----------
    context : EngineContext
        The engine's shared state (steps read and teach its facts).
    each_concurrency : int
        Most commands of a per-job status step running at the same time; beyond that many,
        a step with a batch command runs that one instead.
    """

    def __init__(self, context: EngineContext, each_concurrency: int):
        self.context = context
        self.each_concurrency = max(1, each_concurrency)
        #: The clock of a per-job step's ``pace`` (replaceable in tests).
        self.clock: Callable[[], float] = time.monotonic
        self._asked: dict[tuple[str, str], float] = {}  # (each-step, id) -> when last asked

    async def poll(self, job_ids: Sequence[str]) -> PollAnswer:
        """The statuses of ``job_ids`` and the ids the batch system said it does not know;
        raises :class:`CommandError` if a required step failed."""
        ctx = self.context
        job_ids = list(job_ids)
        wanted = set(job_ids)
        known: dict[str, JobStatus] = {}
        denied: set[str] = set()
        fell_back = False
        for step in ctx.dialect.status_steps:
            if step.when is not None and not step.when(ctx.facts, fell_back):
                fell_back = False
                continue
            fell_back = False
            selected = [i for i in step.select(job_ids, known) if i in wanted]
            if not selected:
                continue
            found: Mapping[str, JobStatus]
            try:
                if step.each:
                    found = await self._run_each(step, selected, known)
                else:
                    found = await self._run_step(step, selected, known, denied=denied)
            except (CommandError, ValueError) as exc:
                if step.fallback is not None and step.fallback(exc, ctx.facts):
                    logger.info("%s: %s; learned %s", step.name, first_line(exc), ctx.facts)
                    fell_back = True
                    continue
                if not step.required:
                    logger.debug("Optional status step %s failed: %s", step.name, exc)
                    continue
                if isinstance(exc, ValueError):
                    raise CommandError(
                        [step.name], 0, reason=f"printed output that could not be read ({exc})"
                    ) from exc
                raise
            asked = set(selected)
            known.update({i: s for i, s in found.items() if i in asked})
        return PollAnswer(known, frozenset(denied - known.keys()))

    async def _run_step(
        self,
        step: StatusStep,
        ids: Sequence[str],
        known: Mapping[str, JobStatus],
        argv: list[str] | None = None,
        denied: set[str] | None = None,
    ) -> Mapping[str, JobStatus]:
        """Run ``step`` for ``ids`` (its own command line unless ``argv``) and parse it."""
        ctx = self.context
        if argv is None and step.max_ids is not None and len(ids) > step.max_ids:
            merged: dict[str, JobStatus] = {}
            for start in range(0, len(ids), step.max_ids):
                chunk = ids[start : start + step.max_ids]
                merged.update(await self._run_step(step, chunk, known, denied=denied))
            return merged
        if argv is None:
            argv = step.argv(ctx.template, ids, ctx.facts)
        if argv is None:
            return {}
        try:
            stdout = (await ctx.run("status", argv, ctx.status_timeout)).stdout
        except CommandError as exc:
            if step.usable_failure is None or not step.usable_failure(exc):
                raise
            found = await _parse(step, exc.stdout, ids, known)
            if denied is not None:
                # the command failed because it does not know some ids: those it left out
                denied.update(i for i in ids if i not in found)
            return found
        return await _parse(step, stdout, ids, known)

    async def _run_each(
        self, step: StatusStep, ids: Sequence[str], known: Mapping[str, JobStatus]
    ) -> dict[str, JobStatus]:
        """A per-job step: the ids due (``pace``) in one batch command where the step has
        one and more than ``each_concurrency`` commands would run, else one command per
        group, at most ``each_concurrency`` at a time."""
        ctx = self.context
        now = self.clock()
        asked = set(ids)
        for key in [k for k in self._asked if k[0] == step.name and k[1] not in asked]:
            del self._asked[key]  # forget ids no longer asked about
        due = []
        for job_id in ids:
            last = self._asked.get((step.name, job_id))
            if last is None or now - last >= step.pace:
                self._asked[(step.name, job_id)] = now
                due.append(job_id)
        if not due:
            return {}
        groups = step.group(due) if step.group is not None else [[i] for i in due]
        if step.batch_argv is not None and len(groups) > self.each_concurrency:
            with ctx.lock:
                times = [ctx.submitted_at.get(i) for i in due]
            known_times = [t for t in times if t is not None]
            since = min(known_times) if len(known_times) == len(times) else None
            argv = step.batch_argv(ctx.template, due, {**ctx.facts, "submitted_since": since})
            if argv is not None:
                try:
                    return dict(await self._run_step(step, due, known, argv))
                except (CommandError, ValueError) as exc:
                    logger.debug("%s for %d jobs failed: %s", step.name, len(due), exc)
                    return {}
        limit = asyncio.Semaphore(self.each_concurrency)

        async def one(group: list[str]) -> Mapping[str, JobStatus]:
            async with limit:
                try:
                    return await self._run_step(step, group, known)
                except (CommandError, ValueError) as exc:
                    logger.debug("%s for %s failed: %s", step.name, " ".join(group), exc)
                    return {}

        found: dict[str, JobStatus] = {}
        for result in await asyncio.gather(*(one(g) for g in groups)):
            found.update(result)
        return found


async def _parse(
    step: StatusStep, stdout: str, ids: Sequence[str], known: Mapping[str, JobStatus]
) -> Mapping[str, JobStatus]:
    if len(stdout) > _PARSE_IN_THREAD:
        # tens of thousands of lines: parsed in a thread, the loop keeps running
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, step.parse, stdout, ids, dict(known))
    return step.parse(stdout, ids, known)


def tag_listing(ctx: EngineContext) -> dict[str, str]:
    """Tag texts of this user's tagged jobs, by id (blocking). The dialect's listing
    commands are tried in order until one answers with output it can read; else the
    last failure is raised as a :class:`CommandError`."""
    spec = ctx.dialect.tagging
    assert spec is not None
    user = getpass.getuser()
    error: CommandError | None = None
    for argv in spec.list_argvs(user):
        try:
            stdout = ctx.run_sync("status", list(argv), ctx.status_timeout).stdout
            return spec.parse(stdout, user)
        except CommandError as exc:
            error = exc
        except ValueError as exc:
            error = CommandError(
                list(argv), 0, reason=f"printed output that could not be read ({exc})"
            )
    assert error is not None, "a TagSpec lists at least one command"
    raise error


async def list_tagged(ctx: EngineContext) -> dict[str, JobTag]:
    """This user's jobs carrying a dask_jobqueue tag (any cluster, any owner), by id."""
    if ctx.dialect.tagging is None:
        return {}
    texts = await asyncio.get_running_loop().run_in_executor(None, tag_listing, ctx)
    tags = {job_id: JobTag.parse(text) for job_id, text in texts.items()}
    return {job_id: tag for job_id, tag in tags.items() if tag is not None}
