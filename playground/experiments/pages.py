"""The run page's context: the view and the progress socket (consumers.py) draw the same
partials from it, so neither imports the other."""

from __future__ import annotations

from django.conf import settings

from playground.experiments import grid, progress, worker
from playground.experiments.models import ExperimentRun


def run_context(user, run: ExperimentRun, show: str, page_number: str | None) -> dict:
    """The run page's context; the progress socket (consumers.py) renders it too.

    A stopping run is reaped first (worker.reap): when every worker died holding its items,
    opening the page (or its poll, or its socket's redraw) ends it once the leases passed."""
    if run.status == ExperimentRun.Status.STOPPING:
        worker.reap(run.pk)
        run.refresh_from_db(fields=["status", "finished"])
    if show not in grid.FILTERS:
        show = "all"
    previous = run.experiment.runs.filter(number__lt=run.number).order_by("-number").first()
    return {
        "run": run,
        "experiment": run.experiment,
        "progress": progress.of(run),
        "columns": grid.columns(run),
        "page": grid.page(run, show, page_number),
        "show": show,
        "totals": grid.totals(run),
        "check_labels": grid.check_labels(run),
        "can_change": run.experiment.can_change(user),
        "previous": previous,
        "live": progress.live(),
        "poll_interval": settings.PLAYGROUND_EXPERIMENTS["POLL_INTERVAL"],
    }
