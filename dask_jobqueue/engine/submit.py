"""Submitting: commands in threads, retries of transient failures with adoption by tag, and
submissions whose output could not be read (settled by their tag, never guessed).

Each submission carries a tag (where the dialect has tagging): before a retry, jobs already
carrying it are adopted instead of submitted twice; a submission that printed no readable id
is settled by the jobs its tag is listed under (adopted if they are what it submitted, else
cancelled), and a tag no job carries yet is remembered until the cluster closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .._shell import CommandError
from ..dialect import TRANSIENT_SUBMIT_ERRORS, ArraySupport
from ..tags import JobTag
from .arrays import ArrayPlanner, Refused, array_script, too_large
from .cancel import Canceller
from .context import EngineContext, first_line
from .query import tag_listing

if TYPE_CHECKING:
    from ..job import Job

logger = logging.getLogger(__name__)

#: Looks for the jobs of a submission whose output could not be read (listings may lag).
_UNREADABLE_LOOKS = 3


class Submitter:
    """Submits jobs, several commands at a time in threads.

    Parameters
    ----------
    context : EngineContext
        The engine's shared state (submitted ids become live there).
    arrays : ArrayPlanner
        Plans which jobs go as one array.
    canceller : Canceller
        Cancels what a submission created while the engine closed, or what its tag shows
        that it did not submit.
    timeout : float
        Seconds before a submit command is killed.
    concurrency : int
        Submit commands running at the same time.
    rate_limit : float, optional
        Most submit commands per second.
    attempts : int
        Tries of a submission failing with a transient error (with tagging only).
    retry_delay : float
        Pause before the first retry, doubled for each further one, jittered by +-50%.
    """

    def __init__(
        self,
        context: EngineContext,
        arrays: ArrayPlanner,
        canceller: Canceller,
        timeout: float,
        concurrency: int,
        rate_limit: float | None,
        attempts: int,
        retry_delay: float,
    ):
        self.context = context
        self.arrays = arrays
        self.canceller = canceller
        self.timeout = timeout
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self._next_submit = 0.0
        self._executor: ThreadPoolExecutor | None = None
        #: Tags of submissions whose output named no id and whose jobs were not found.
        self._unsettled: set[JobTag] = set()

    # ------------------------------------------------------------------ entry points

    async def submit_many(
        self, jobs: Sequence[Job], arrays: bool | None
    ) -> list[str | BaseException]:
        """The id of each job (also set as ``job.job_id``) or its submission's error."""
        ctx = self.context
        if ctx.closing:
            raise RuntimeError("the cluster is closing: no more submissions")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="dask-jobqueue-submit"
            )
        loop = asyncio.get_running_loop()
        use_arrays = (self.arrays.job_arrays == "auto") if arrays is None else arrays
        use_arrays = use_arrays and len(jobs) > 1
        if use_arrays and not self.arrays.limits_known:
            await loop.run_in_executor(self._executor, self.arrays.discover_limits)
        support = ctx.template.array_support_for(ctx.facts) if use_arrays else None
        # renders every job's script: in a thread, not to stall the loop at 10,000s of jobs
        groups = await loop.run_in_executor(self._executor, self.arrays.plan, jobs, support)
        futures = [
            loop.run_in_executor(self._executor, self._submit_planned, group, support)
            for group in groups
        ]
        group_outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: dict[int, str | BaseException] = {}
        for group, outcome in zip(groups, group_outcomes, strict=True):
            for k, job in enumerate(group):
                if isinstance(outcome, BaseException):
                    results[id(job)] = outcome
                else:
                    job.job_id = outcome[k]
                    results[id(job)] = outcome[k]
        return [results[id(job)] for job in jobs]

    def close(self) -> None:
        """No more submissions; submissions still running cancel what they create."""
        with self.context.lock:
            self.context.closing = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ one group

    def _submit_planned(self, group: list[Job], support: ArraySupport | None) -> list[str]:
        """Submit one group of the plan (blocking); the ids. An array the site refuses as
        too large is submitted again in smaller ones (:meth:`_submit_smaller`)."""
        try:
            return self._submit_group(group, support)
        except Refused as refused:
            assert support is not None
            return self._submit_smaller(group, support, refused.error)

    def _submit_group(self, group: list[Job], support: ArraySupport | None) -> list[str]:
        """Submit ``group`` as one array (or one job); the ids. Raises :class:`Refused`
        for an array the site refuses as too large."""
        ctx = self.context
        first = group[0]
        first.prepare_log_directory()
        # the array support when the group goes as one array (the plan makes groups of
        # several jobs only with one), else None
        array = support if len(group) > 1 else None
        assert array is not None or len(group) == 1
        if array:
            script = array_script(first, [job.name for job in group], array)
            indices = [array.first_index + k for k in range(len(group))]
        else:
            script = first.job_script()
            indices = []
        tagging = ctx.dialect.tagging
        tag = ctx.new_tag()
        for job in group:
            job.tag = tag
        with tempfile.TemporaryDirectory(prefix="dask-jobqueue-") as tmp:
            path = os.path.join(tmp, "job.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            argv = first.array_submit_argv(path, script) if array else first.submit_argv(path)
            head = len(shlex.split(first.submit_command or "")) or 1
            extra = list(tagging.submit_args(tag.text())) if tagging is not None else []
            if array:
                extra += array.submit_args(indices[0], indices[-1])
            argv = [*argv[:head], *extra, *argv[head:]]

            def parse(stdout: str) -> list[str]:
                if array:
                    return array.task_ids(stdout, indices)
                return [first.job_id_from_submit_output(stdout)]

            try:
                ids = self._run_submit(
                    argv, first.submit_stdin(script), parse, tag if tagging else None, indices
                )
            except CommandError as exc:
                if array and too_large(exc, array) is not None:
                    raise Refused(exc) from exc
                raise
        closing = ctx.track(ids, " ".join(argv[:-1] + ["<script>"]))
        logger.debug("Submitted job(s) %s for %s", " ".join(ids), [j.name for j in group])
        if closing:
            logger.info("Cancelling job(s) %s: submitted while the cluster closed", ids)
            self.canceller.cancel_sync(ids)
        return ids

    def _submit_smaller(
        self, group: list[Job], support: ArraySupport, refused: CommandError
    ) -> list[str]:
        """Submit the jobs of an array the site ``refused`` as too large again, in arrays of
        at most half the refused size (a cap kept from then on); the ids in the order of
        ``group``. Every refusal halves the cap and single jobs are never refused as arrays,
        so at most log2(len(group)) more refusals come. A closing cluster gets the refusal
        for the jobs not submitted yet."""
        self.arrays.lower_cap(len(group), support, refused)
        ids: list[str] = []
        rest = list(group)
        while rest:
            if self.context.closing:
                raise refused  # what was submitted is live: the close cancels it
            size = self.arrays.size_limit() or len(rest)  # a parallel refusal may lower it
            part = rest[:size]
            try:
                for piece in self.arrays.plan(part, support):  # one array, or single jobs
                    ids += self._submit_group(piece, support)
            except Refused as again:
                self.arrays.lower_cap(len(part), support, again.error)
                continue
            rest = rest[size:]
        return ids

    # ------------------------------------------------------------------ one command

    def _pace(self) -> None:
        """Wait for the next submit slot under ``rate_limit``."""
        if not self.rate_limit:
            return
        with self.context.lock:
            now = time.monotonic()
            at = max(now, self._next_submit)
            self._next_submit = at + 1.0 / self.rate_limit
        if at > now:
            time.sleep(at - now)

    def _transient(self, exc: CommandError) -> bool:
        if exc.returncode is None:
            return bool(exc.reason and exc.reason.startswith("timed out"))
        pattern = self.context.dialect.transient_submit_errors or TRANSIENT_SUBMIT_ERRORS
        return bool(pattern.search(exc.stderr) or pattern.search(exc.stdout))

    def _run_submit(
        self,
        argv: list[str],
        stdin: str | None,
        parse: Callable[[str], list[str]],
        tag: JobTag | None,
        indices: Sequence[int],
    ) -> list[str]:
        """Run a submit command; transient failures are retried, adopting tagged jobs."""
        ctx = self.context
        for attempt in range(self.attempts):
            self._pace()
            try:
                stdout = ctx.run_sync("submit", argv, self.timeout, stdin=stdin).stdout
            except CommandError as exc:
                accepted = self._accepted_despite(exc, parse)
                if accepted is not None:
                    return accepted
                if (
                    tag is None
                    or not self._transient(exc)
                    or attempt + 1 >= self.attempts
                    or ctx.closing
                ):
                    raise
                delay = self.retry_delay * 2**attempt * random.uniform(0.5, 1.5)
                logger.warning(
                    "Submit failed with a transient error, checking for its jobs and retrying "
                    "in %.1fs: %s",
                    delay,
                    first_line(exc),
                )
                ctx.runner.sleep_sync(delay)
                listed = self._find_tagged(tag)
                if listed:
                    try:
                        adopted = self._adopt(listed, indices)
                    except ValueError as error:
                        raise CommandError(
                            argv,
                            exc.returncode,
                            exc.stdout,
                            exc.stderr,
                            reason=f"failed, yet job(s) {' '.join(listed)} carry its tag "
                            f"{tag.text()}: {error}",
                        ) from exc
                    logger.warning(
                        "The failed submission was accepted: adopting job(s) %s (tag %s)",
                        " ".join(adopted),
                        tag.text(),
                    )
                    return adopted
            else:
                try:
                    return parse(stdout)
                except ValueError as error:
                    return self._settle_unreadable(argv, stdout, error, tag, indices)
        raise AssertionError("unreachable")  # pragma: no cover

    def _accepted_despite(
        self, exc: CommandError, parse: Callable[[str], list[str]]
    ) -> list[str] | None:
        """The ids printed by a submit command that failed or hung *after* printing them
        (the batch system accepted the jobs), so they are tracked rather than left behind;
        ``None`` if it printed none. Only for anchored id patterns, which cannot mistake a
        message for an id."""
        if self.context.template.job_id_regexp.startswith("^") and exc.stdout.strip():
            try:
                ids = parse(exc.stdout)
            except ValueError:
                return None
            logger.warning(
                "The submit command reported an error after the batch system accepted job(s) "
                "%s; tracking them: %s",
                " ".join(ids),
                first_line(exc),
            )
            return ids
        return None

    # ------------------------------------------------------------------ by tag

    def _settle_unreadable(
        self,
        argv: list[str],
        stdout: str,
        error: ValueError,
        tag: JobTag | None,
        indices: Sequence[int],
    ) -> list[str]:
        """The ids of a submission that succeeded with output that names no id, or several
        (blocking): the jobs carrying its tag are adopted if they are what was submitted,
        else cancelled, and the submission fails. A tag no job carries yet is kept: what
        appears with it is cancelled by :meth:`cancel_unsettled_sync` at close."""
        reason = f"succeeded but printed output that could not be read ({first_line(error)})"
        if tag is None:
            raise CommandError(argv, 0, stdout, reason=reason) from error
        listed: list[str] = []
        for look in range(_UNREADABLE_LOOKS):
            if look:
                self.context.runner.sleep_sync(self.retry_delay)
            try:
                listed = self._find_tagged(tag)
            except CommandError as failed:
                self._remember_unsettled(tag)
                raise CommandError(
                    argv,
                    0,
                    stdout,
                    reason=f"{reason}; its jobs could not be looked up by tag {tag.text()} "
                    f"({first_line(failed)}): any is cancelled when the cluster closes",
                ) from error
            if listed:
                break
        if not listed:
            self._remember_unsettled(tag)
            raise CommandError(
                argv,
                0,
                stdout,
                reason=f"{reason}; no job carries its tag {tag.text()} (yet): any that "
                "appears is cancelled when the cluster closes",
            ) from error
        try:
            adopted = self._adopt(listed, indices)
        except ValueError as mismatch:
            left = self.canceller.cancel_untracked_sync(listed)
            if left:
                self._remember_unsettled(tag)
            raise CommandError(
                argv,
                0,
                stdout,
                reason=f"{reason}; job(s) {' '.join(listed)} carry its tag {tag.text()} but "
                f"are not what it submitted ({mismatch}): cancelled",
            ) from error
        logger.warning(
            "The submit command %s; adopting job(s) %s, which carry its tag %s",
            reason,
            " ".join(adopted),
            tag.text(),
        )
        return adopted

    def _remember_unsettled(self, tag: JobTag) -> None:
        with self.context.lock:
            self._unsettled.add(tag)

    @property
    def has_unsettled(self) -> bool:
        """Whether a submission whose output could not be read is still unsettled."""
        return bool(self._unsettled)

    def cancel_unsettled_sync(self) -> None:
        """Cancel the jobs carrying the tag of a submission whose output could not be read
        and whose jobs were not found then (blocking). A tag is forgotten once its jobs are
        cancelled or the listing shows none."""
        ctx = self.context
        with ctx.lock:
            unsettled = set(self._unsettled)
        if not unsettled:
            return
        try:
            texts = tag_listing(ctx)
        except CommandError as exc:
            logger.warning(
                "Could not look for the jobs of %d submission(s) whose output could not be "
                "read: %s",
                len(unsettled),
                first_line(exc),
            )
            return
        found = [i for i, text in texts.items() if JobTag.parse(text) in unsettled]
        if found:
            logger.warning(
                "Cancelling job(s) %s: created by submissions whose output could not be read",
                " ".join(found),
            )
        if not self.canceller.cancel_untracked_sync(found):
            with ctx.lock:
                self._unsettled -= unsettled

    def _find_tagged(self, tag: JobTag) -> list[str]:
        """Ids this user's jobs carrying ``tag`` are listed under (blocking)."""
        try:
            texts = tag_listing(self.context)
        except CommandError as error:
            # Not knowing means a retry could duplicate: give up on this submission.
            raise CommandError(
                error.argv,
                error.returncode,
                error.stdout,
                error.stderr,
                reason="failed while looking for the jobs of a failed submission "
                f"(tag {tag.text()}); not retrying to avoid duplicates",
            ) from error
        return [i for i, text in texts.items() if JobTag.parse(text) == tag]

    def _adopt(self, listed: list[str], indices: Sequence[int]) -> list[str]:
        """The ids of a submission from the ids its tag is listed under."""
        if not indices:
            if len(listed) != 1:
                raise ValueError(f"{len(listed)} jobs for one submission")
            return listed
        ctx = self.context
        support = ctx.template.array_support_for(ctx.facts)
        if support is None or support.adopt is None:
            raise ValueError("this batch system's array tasks cannot be told apart")
        return support.adopt(listed, indices)
