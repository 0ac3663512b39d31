"""Load-and-authorize for datasets, experiments and runs: the object if the user may see it
(and change, run or stop it, with change=True), else 404 (or 403 for a viewer). Views and
the progress socket both come through here."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from playground.experiments.models import Dataset, Experiment, ExperimentRun

VIEWERS = "Viewers can look at experiments but not change or run them."


def get_dataset_for_user(user, pk: int | str, *, change: bool = False) -> Dataset:
    try:
        dataset = Dataset.objects.visible_to(user).get(pk=int(pk))
    except (Dataset.DoesNotExist, ValueError, TypeError):
        raise Http404("No such dataset") from None
    if change and not dataset.can_change(user):
        raise PermissionDenied(VIEWERS)
    return dataset


def get_experiment_for_user(user, pk: int | str, *, change: bool = False) -> Experiment:
    try:
        experiment = Experiment.objects.visible_to(user).select_related("dataset").get(pk=int(pk))
    except (Experiment.DoesNotExist, ValueError, TypeError):
        raise Http404("No such experiment") from None
    if change and not experiment.can_change(user):
        raise PermissionDenied(VIEWERS)
    return experiment


def get_run_for_user(user, pk: int | str, *, change: bool = False) -> ExperimentRun:
    visible = Experiment.objects.visible_to(user)
    try:
        run = ExperimentRun.objects.select_related("experiment", "group").get(
            pk=int(pk), experiment__in=visible
        )
    except (ExperimentRun.DoesNotExist, ValueError, TypeError):
        raise Http404("No such run") from None
    if change and not run.experiment.can_change(user):
        raise PermissionDenied(VIEWERS)
    return run
