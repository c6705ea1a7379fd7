"""The /status page's text: what it shows when things are not well, and that what
it shows is escaped."""

from __future__ import annotations

from worker.observability.status import JobRow, PortalRow, Status, render


def test_a_worker_not_ready_and_unread_jobs_say_why() -> None:
    page = render(
        Status(
            ready="no broker connection",
            node="n1:5672",
            uptime_s=3725,
            jobs_unread="the job store in Redis: ConnectionError",
        )
    )
    assert "not ready</span>: no broker connection" in page
    assert "up 1 h 02 min" in page
    assert "jobs not read: the job store in Redis: ConnectionError" in page


def test_what_the_page_shows_is_escaped() -> None:
    page = render(
        Status(
            ready="<script>x</script>",
            node="n1",
            uptime_s=1,
            portals=[PortalRow("acme", "up", 2.0, 50, None, 0, 0)],
            queues={"q<1>": 3},
            jobs=[JobRow("a&b", 5, 10, 5, 0, 2.5, 2.0, aborting=True)],
        )
    )
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "q&lt;1&gt;" in page
    assert '<tr data-job="a&amp;b"><td>a&amp;b (aborting)</td>' in page
    assert '<progress max="10" value="5"></progress> 50.0%' in page
    assert '<td class="n">-</td>' in page  # no queue of its own
