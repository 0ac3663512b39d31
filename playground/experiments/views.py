from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from playground.accounts.spaces import current_space
from playground.chat.access import get_conversation_for_user
from playground.chat.models import Message
from playground.experiments import datasets, forms, grid, pages, runner
from playground.experiments.access import (
    VIEWERS,
    get_dataset_for_user,
    get_experiment_for_user,
    get_run_for_user,
)
from playground.experiments.models import Dataset, DatasetRow, Experiment, ExperimentRun
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest

INDEX = "experiments/index.html"
DATASET = "experiments/dataset.html"
EXPERIMENT = "experiments/experiment.html"
RUN = "experiments/run.html"
COMPARE = "experiments/compare.html"
ROWS_PER_PAGE = 100


def _space(request: AuthenticatedHttpRequest, *, change: bool = False) -> int | None:
    """The current space's team id (None: Personal); with change=True, refused to viewers."""
    membership = current_space(request)
    if membership is None:
        return None
    if change and not membership.can_run():
        raise PermissionDenied(VIEWERS)
    return membership.team_id


def _can_add(request: AuthenticatedHttpRequest) -> bool:
    """Whether the user may upload datasets and create experiments in the current space
    (a viewer may not: the forms are not shown to them)."""
    membership = current_space(request)
    return membership is None or membership.can_run()


@require_GET
@login_required
def index(request: AuthenticatedHttpRequest) -> HttpResponse:
    team_id = _space(request)
    user = request.user
    context = {
        "experiments": Experiment.objects.visible_to(user).in_space(team_id),
        "datasets": Dataset.objects.visible_to(user).in_space(team_id),
        "upload": forms.DatasetUploadForm(),
        "form": forms.ExperimentForm(user, team_id),
        "caps": datasets.caps(),
        "can_add": _can_add(request),
    }
    return render(request, INDEX, context)


@require_POST
@login_required
def dataset_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    team_id = _space(request, change=True)
    form = forms.DatasetUploadForm(request.POST, request.FILES)
    errors: list[str] = []
    if form.is_valid():
        upload = form.cleaned_data["file"]
        max_bytes = datasets.caps()[1]
        if upload.size > max_bytes:
            errors = [f"The file is larger than {max_bytes // (1024 * 1024)} MB."]
        else:
            try:
                parsed = datasets.parse(upload.name, upload.read())
            except datasets.UploadError as exc:
                errors = exc.errors
            else:
                dataset = datasets.create(request.user, team_id, form.cleaned_data["name"], parsed)
                return redirect("experiments:dataset", dataset.pk)
    context = {
        "upload": form,
        "upload_errors": errors,
        "experiments": Experiment.objects.visible_to(request.user).in_space(team_id),
        "datasets": Dataset.objects.visible_to(request.user).in_space(team_id),
        "form": forms.ExperimentForm(request.user, team_id),
        "caps": datasets.caps(),
        "can_add": True,  # _space(change=True) let only those who may add get here
    }
    return render(request, INDEX, context, status=400)


@require_GET
@login_required
def dataset_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    dataset = get_dataset_for_user(request.user, pk)
    rows = Paginator(dataset.rows.all(), ROWS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "dataset": dataset,
        "rows": rows,
        "can_change": dataset.can_change(request.user),
        "newer": dataset.next_versions.order_by("-version").first(),
    }
    return render(request, DATASET, context)


def _row_values(request: AuthenticatedHttpRequest) -> dict | None:
    form = forms.RowForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(str(e) for e in errors))
        return None
    return form.cleaned_data


@require_POST
@login_required
def dataset_row_save(request: AuthenticatedHttpRequest, pk: int, row_pk: int) -> HttpResponse:
    """Edit a row. A dataset a run used is not changed: the edit goes into a new version."""
    dataset = get_dataset_for_user(request.user, pk, change=True)
    values = _row_values(request)
    if values is None:
        return redirect("experiments:dataset", dataset.pk)
    row = dataset.rows.filter(pk=row_pk).first()
    if row is None:
        return redirect("experiments:dataset", dataset.pk)
    with transaction.atomic():
        target = dataset.edit_copy()
        target.rows.filter(position=row.position).update(**values)
        _add_columns(target, values["variables"])
    if target != dataset:
        messages.info(
            request, f"A run used version {dataset.version}: saved as version {target.version}."
        )
    return redirect("experiments:dataset", target.pk)


@require_POST
@login_required
def dataset_row_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    dataset = get_dataset_for_user(request.user, pk, change=True)
    values = _row_values(request)
    if values is None:
        return redirect("experiments:dataset", dataset.pk)
    target = _append(dataset, values)
    return redirect("experiments:dataset", target.pk)


@require_POST
@login_required
def dataset_row_from_reply(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Add to dataset: a saved reply's prompt becomes `input`, its text the expected output.
    The reply must be one the user may see."""
    dataset = get_dataset_for_user(request.user, pk, change=True)
    try:
        message = Message.objects.select_related("parent").get(
            pk=int(request.POST.get("message", "")), role=Message.Role.ASSISTANT
        )
    except (Message.DoesNotExist, ValueError):
        messages.error(request, "No such reply.")
        return redirect("experiments:dataset", dataset.pk)
    get_conversation_for_user(request.user, message.conversation_id)  # 404 if not visible
    row = runner.reply_row(message)
    values = {"variables": {"input": row["input"]}, "expected": row["expected"], "notes": ""}
    target = _append(dataset, values)
    messages.success(request, f"Added reply #{message.pk} as a row.")
    return redirect("experiments:dataset", target.pk)


@require_POST
@login_required
def dataset_add_reply(request: AuthenticatedHttpRequest) -> HttpResponse:
    """ "Add to dataset" on a conversation page: the dataset is chosen in the form."""
    dataset = get_dataset_for_user(request.user, request.POST.get("dataset", ""), change=True)
    return dataset_row_from_reply(request, dataset.pk)


def _append(dataset: Dataset, values: dict) -> Dataset:
    with transaction.atomic():
        target = dataset.edit_copy()
        if target.rows.count() >= datasets.caps()[0]:
            raise PermissionDenied("The dataset has as many rows as it may.")
        last = target.rows.order_by("-position").values_list("position", flat=True).first()
        DatasetRow.objects.create(
            dataset=target, position=(-1 if last is None else last) + 1, **values
        )
        _add_columns(target, values["variables"])
    return target


def _add_columns(dataset: Dataset, variables: dict) -> None:
    new = [k for k in variables if k not in dataset.columns]
    if new:
        dataset.columns = [*dataset.columns, *new]
        dataset.save(update_fields=["columns"])


@require_POST
@login_required
def experiment_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    team_id = _space(request, change=True)
    form = forms.ExperimentForm(request.user, team_id, request.POST)
    if not form.is_valid():
        context = {
            "form": form,
            "upload": forms.DatasetUploadForm(),
            "experiments": Experiment.objects.visible_to(request.user).in_space(team_id),
            "datasets": Dataset.objects.visible_to(request.user).in_space(team_id),
            "caps": datasets.caps(),
            "can_add": True,
        }
        return render(request, INDEX, context, status=400)
    data = form.cleaned_data
    experiment = Experiment.objects.create(
        owner=request.user,
        team_id=team_id,
        name=data["name"],
        dataset=data["dataset"],
        prompt=data["prompt"],
        variants=data["variants"],
        checks=data["checks"],
        repeats=data["repeats"],
        row_positions=data["rows"],
    )
    return redirect("experiments:experiment", experiment.pk)


def _initial(experiment: Experiment) -> dict:
    from playground.experiments import checks

    return {
        "name": experiment.name,
        "dataset": experiment.dataset_id,
        "prompt": experiment.prompt,
        "variants": forms.variants_text(experiment.variants),
        "checks": "\n".join(checks.describe(c) for c in experiment.checks),
        "repeats": experiment.repeats,
        "rows": ", ".join(str(p + 1) for p in experiment.row_positions),
    }


@require_http_methods(["GET", "POST"])
@login_required
def experiment_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    experiment = get_experiment_for_user(request.user, pk, change=request.method == "POST")
    status = 200
    if request.method == "POST":
        form = forms.ExperimentForm(request.user, experiment.team_id, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            experiment.name = data["name"]
            experiment.dataset = data["dataset"]
            experiment.prompt = data["prompt"]
            experiment.variants = data["variants"]
            experiment.checks = data["checks"]
            experiment.repeats = data["repeats"]
            experiment.row_positions = data["rows"]
            experiment.save()
            messages.success(request, "Saved.")
            return redirect("experiments:experiment", experiment.pk)
        status = 400
    else:
        form = forms.ExperimentForm(request.user, experiment.team_id, initial=_initial(experiment))
    context = {
        "experiment": experiment,
        "form": form,
        "runs": experiment.runs.all(),
        "can_change": experiment.can_change(request.user),
    }
    return render(request, EXPERIMENT, context, status=status)


@require_POST
@login_required
def experiment_run(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    experiment = get_experiment_for_user(request.user, pk, change=True)
    try:
        run = runner.start(experiment, request.user)
    except runner.RunError as exc:
        messages.error(request, str(exc))
        return redirect("experiments:experiment", experiment.pk)
    return redirect("experiments:run", run.pk)


def _run_context(request: HtmxHttpRequest, run: ExperimentRun) -> dict:
    return pages.run_context(
        request.user, run, request.GET.get("show", "all"), request.GET.get("page")
    )


@require_GET
@login_required
def run_page(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = get_run_for_user(request.user, pk)
    context = _run_context(request, run)
    if request.htmx and request.htmx.target == "run-results":
        return render(request, f"{RUN}#results", context)
    return render(request, RUN, context)


@require_GET
@login_required
def run_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The progress bar and the grid's current page, for the poll (no Redis): the cells
    fill in as they finish. 286 ends htmx's polling once the run is over."""
    run = get_run_for_user(request.user, pk)
    context = _run_context(request, run)
    response = render(request, f"{RUN}#live", context)
    if not run.active:
        response.status_code = 286
    return response


@require_POST
@login_required
def run_stop(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    run = get_run_for_user(request.user, pk, change=True)
    runner.stop(run)
    return redirect("experiments:run", run.pk)


@require_POST
@login_required
def run_resume(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Queue one more drain task for a run still going: its workers were all lost (each
    queued task ran once), or another worker should join."""
    run = get_run_for_user(request.user, pk, change=True)
    if run.active:
        from playground.experiments.tasks import drain_run

        drain_run.enqueue(run.pk)
        messages.success(request, "A worker will pick the run up.")
    return redirect("experiments:run", run.pk)


@require_POST
@login_required
def run_recheck(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Checks again on the saved outputs (with the experiment's current checks); no model
    is called, the judge's verdicts are kept."""
    run = get_run_for_user(request.user, pk, change=True)
    runner.set_checks(run, run.experiment)
    count = runner.recheck(run)
    note = ""
    if request.POST.get("judge") and any(c["kind"] == "judge" for c in run.spec["checks"]):
        from playground.experiments.tasks import rejudge_run

        rejudge_run.enqueue(run.pk, request.user.pk)
        note = " The judge is asked again in the background."
    messages.success(request, f"Re-checked {count} cells.{note}")
    return redirect("experiments:run", run.pk)


@require_GET
@login_required
def run_export(
    request: AuthenticatedHttpRequest, pk: int, fmt: str
) -> HttpResponse | StreamingHttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404("Export as csv or json.")
    run = get_run_for_user(request.user, pk)
    name = f"experiment-{run.experiment_id}-run-{run.number}"
    if fmt == "csv":
        stream = StreamingHttpResponse(grid.as_csv(run), content_type="text/csv; charset=utf-8")
        stream["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return stream
    body = json.dumps(list(grid.records(run)), ensure_ascii=False, indent=1)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}.json"'
    return response


@require_GET
@login_required
def run_compare(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """This run against another run of the same experiment (?with=<run id>; default: the
    run before it)."""
    run = get_run_for_user(request.user, pk)
    others = run.experiment.runs.exclude(pk=run.pk)
    other_pk = request.GET.get("with")
    if other_pk:
        base = others.filter(pk=other_pk if str(other_pk).isdigit() else 0).first()
    else:
        base = others.filter(number__lt=run.number).order_by("-number").first()
    context = {
        "run": run,
        "base": base,
        "others": others,
        "changes": grid.compare(base, run) if base else None,
    }
    return render(request, COMPARE, context)
