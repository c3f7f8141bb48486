"""The state model and the job table users print."""

from __future__ import annotations

from dask_jobqueue.tracking import HTML_ROWS, JobRecord, JobState, JobStatus, JobTable


def test_final_and_waiting_states():
    assert {s for s in JobState if s.is_final} == {
        JobState.FINISHED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMED_OUT,
        JobState.LOST,
    }
    assert {s for s in JobState if s.is_waiting} == {JobState.QUEUED, JobState.HELD}


def test_record_follows_reports_and_connections():
    record = JobRecord(name="c-0", job_id="12", workers_expected=2)
    assert (record.state, record.reason) == (JobState.QUEUED, "submitted")
    assert record.apply(JobStatus(JobState.QUEUED, "Priority", None, "PENDING"), now=1.0)
    assert not record.apply(JobStatus(JobState.QUEUED, "Priority", None, "PENDING"), now=2.0)
    assert record.apply(JobStatus(JobState.RUNNING, None, None, "RUNNING"), now=3.0)
    assert record.started_at == 3.0
    assert record.set_connected_workers(2, now=4.0)
    assert (record.state, record.ever_connected) == (JobState.CONNECTED, True)
    # the batch system still says RUNNING: the record stays connected while workers are there
    record.apply(JobStatus(JobState.RUNNING, None, None, "RUNNING"), now=5.0)
    assert record.state == JobState.CONNECTED
    assert record.set_connected_workers(0)
    assert record.state == JobState.RUNNING
    assert record.apply(JobStatus(JobState.TIMED_OUT, "TimeLimit", 143, "TIMEOUT"), now=9.0)
    assert (record.state, record.exit_code, record.ended_at) == (JobState.TIMED_OUT, 143, 9.0)


def test_table_text_summary_html_and_dataframe():
    queued = JobRecord(name="c-1", job_id="13")
    queued.apply(JobStatus(JobState.QUEUED, "QOSMaxJobsPerUserLimit"))
    failed = JobRecord(name="c-0", job_id="12")
    failed.apply(JobStatus(JobState.FAILED, "NonZeroExitCode", 127))
    table = JobTable([failed, queued])
    text = repr(table)
    assert text.splitlines()[0].split() == [
        "JOB_ID",
        "NAME",
        "STATE",
        "REASON",
        "EXIT_CODE",
        "WORKERS",
        "AGE",
    ]
    assert "QOSMaxJobsPerUserLimit" in text and "127" in text
    assert table.summary() == "2 jobs: 1 failed, 1 queued (QOSMaxJobsPerUserLimit)"
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "&lt;" not in html
    frame = table.to_dataframe()
    assert list(frame["state"]) == ["failed", "queued"]
    assert JobTable().summary() == "no jobs" and "no jobs" in repr(JobTable())


def test_html_escapes_scheduler_text():
    record = JobRecord(name="c-0", job_id="1")
    record.apply(JobStatus(JobState.QUEUED, "cannot run <because> & reasons"))
    assert "cannot run &lt;because&gt; &amp; reasons" in JobTable([record])._repr_html_()


def test_html_of_many_jobs_is_a_summary_and_the_first_rows():
    records = [JobRecord(name=f"c-{k}", job_id=str(1000 + k)) for k in range(50_000)]
    for record in records[:10]:
        record.apply(JobStatus(JobState.RUNNING))
    html = JobTable(records)._repr_html_()
    assert "50000 jobs: 10 running, 49990 queued (submitted)" in html
    assert html.count("<tr>") == 1 + HTML_ROWS + 1  # head, the first rows, "... and N more"
    assert ">1000<" in html and f">{1000 + HTML_ROWS - 1}<" in html
    assert f">{1000 + HTML_ROWS}<" not in html
    assert f"and {50_000 - HTML_ROWS} more" in html
    assert len(html) < 20_000
    # a table that fits is shown whole, without the summary line
    small = JobTable(records[:HTML_ROWS])._repr_html_()
    assert small.count("<tr>") == 1 + HTML_ROWS and "more" not in small


def test_head_shows_the_first_rows_and_counts_the_rest():
    table = JobTable(JobRecord(name=f"c-{i}", job_id=str(i)) for i in range(50_000))
    text = table.head(20)
    lines = text.splitlines()
    assert (
        lines[0].startswith("JOB_ID") and lines[1].startswith("0 ") and lines[20].startswith("19 ")
    )
    assert lines[-1] == "... and 49980 more (cluster.jobs lists every job)"
    assert len(lines) == 22
    assert "more" not in JobTable(table[:3]).head(20)


def test_pool_column_appears_only_with_pools():
    own = JobRecord(name="c-0", job_id="1")
    assert repr(JobTable([own])).startswith("JOB_ID")
    pooled = JobRecord(name="c-gpu-0", job_id="2", pool="gpu")
    lines = repr(JobTable([own, pooled])).splitlines()
    assert (
        lines[0].startswith("POOL")
        and lines[1].startswith("default")
        and lines[2].startswith("gpu")
    )
