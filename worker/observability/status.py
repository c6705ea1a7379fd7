"""/status: one HTML page, rendered on the server, of what the worker is doing.

Beside /metrics on HTTP_PORT, which stays inside the deployment: the page names
the portals. No script and no front-end build: the page reloads itself every
few seconds (`<meta http-equiv="refresh">`), so any browser, or `curl`, reads it.

    the worker   ready or why not, its broker node, how long it has run
    portals      each one's state (up; idle, with no lane now; or the portal-wide
                 state it is in), its pace
                 (requests a second, burst), commands waiting on its queue, held in
                 the worker, calls out
    queues       the commands waiting on each work queue
    jobs         the bulk jobs still running: progress, rate, ETA
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["REFRESH_S", "JobRow", "PortalRow", "Status", "duration", "render"]

REFRESH_S = 5


@dataclass(frozen=True)
class PortalRow:
    key: str
    state: str  # "up", "idle" (no lane now), or the portal-wide state ("blocked"...)
    rate_per_second: float
    burst: int
    waiting: int | None  # on its queue, as last read (None: it has no queue of its own)
    held: int  # deliveries in the worker
    calls_out: int


@dataclass(frozen=True)
class JobRow:
    job: str
    ended: int
    expected: int
    succeeded: int
    failed: int
    rate: float | None  # results a second lately
    eta_s: float | None
    aborting: bool = False


@dataclass(frozen=True)
class Status:
    ready: str | None  # None: ready; otherwise why not
    node: str
    uptime_s: float
    portals: list[PortalRow] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)
    queues_read_s: float = 0.0  # how long ago the queues were read
    jobs: list[JobRow] = field(default_factory=list)
    jobs_unread: str | None = None  # why the jobs could not be read, if they could not


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; } td, th { padding: .25em .8em; text-align: left; }
th { border-bottom: 1px solid #999; } tr:nth-child(even) td { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #176c2c; font-weight: 600; } .down { color: #b3261e; font-weight: 600; }
progress { width: 12em; } .muted { color: #777; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def duration(seconds: float | None) -> str:
    """``seconds`` as people read them: 42 s, 3 min 05 s, 2 h 10 min; "-" for unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _portal_rows(portals: list[PortalRow]) -> list[str]:
    rows = []
    for p in portals:
        state = "up" if p.state in ("up", "idle") else "down"
        waiting = "-" if p.waiting is None else str(p.waiting)
        rows.append(
            f'<tr data-portal="{_e(p.key)}"><td>{_e(p.key)}</td>'
            f'<td class="{state}">{_e(p.state)}</td>'
            f'<td class="n">{p.rate_per_second:g}/s, burst {p.burst}</td>'
            f'<td class="n">{waiting}</td><td class="n">{p.held}</td>'
            f'<td class="n">{p.calls_out}</td></tr>'
        )
    return rows


def _job_rows(jobs: list[JobRow]) -> list[str]:
    rows = []
    for j in jobs:
        share = j.ended / j.expected if j.expected else 0.0
        rate = "-" if j.rate is None else f"{j.rate:.1f}/s"
        phase = " (aborting)" if j.aborting else ""
        rows.append(
            f'<tr data-job="{_e(j.job)}"><td>{_e(j.job)}{phase}</td>'
            f'<td><progress max="{max(j.expected, 1)}" value="{j.ended}"></progress> '
            f"{share:.1%}</td>"
            f'<td class="n">{j.ended} of {j.expected}</td>'
            f'<td class="n">{j.succeeded}</td><td class="n">{j.failed}</td>'
            f'<td class="n">{rate}</td><td class="n">{duration(j.eta_s)}</td></tr>'
        )
    return rows


def render(status: Status) -> str:
    """The page, as text."""
    if status.ready is None:
        ready = '<span class="up">ready</span>'
    else:
        ready = f'<span class="down">not ready</span>: {_e(status.ready)}'
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        "<title>b24-worker status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>b24-worker</h1>",
        f'<p id="worker">{ready} &middot; broker {_e(status.node)} &middot; '
        f"up {duration(status.uptime_s)} &middot; "
        f'<span class="muted">reloads every {REFRESH_S} s</span></p>',
        f'<h2>Portals ({len(status.portals)})</h2><table id="portals">',
        "<tr><th>portal</th><th>state</th><th>pace</th><th>waiting</th>"
        "<th>in the worker</th><th>calls out</th></tr>",
        *_portal_rows(status.portals),
        "</table>",
        f'<h2>Queues <span class="muted">(read {duration(status.queues_read_s)} ago)</span>'
        '</h2><table id="queues"><tr><th>queue</th><th>waiting</th></tr>',
        *(
            f'<tr><td>{_e(name)}</td><td class="n">{count}</td></tr>'
            for name, count in sorted(status.queues.items())
        ),
        "</table>",
        f'<h2>Running jobs ({len(status.jobs)})</h2><table id="jobs">',
        "<tr><th>job</th><th>progress</th><th>ended</th><th>succeeded</th><th>failed</th>"
        "<th>rate</th><th>ETA</th></tr>",
        *_job_rows(status.jobs),
        "</table>",
    ]
    if status.jobs_unread is not None:
        parts.append(f'<p class="down">jobs not read: {_e(status.jobs_unread)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
