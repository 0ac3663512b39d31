"""The History page's query: every conversation a user may see, filtered, newest first.

Keyset pagination on (updated, id), the sidebar's cursor and order: no OFFSET, so a deep page
costs what the first does and a conversation that moves to the top shifts nothing.

Filters are data: each `Filter` brings its form field (choices built for the user, so a team
or author outside the user's reach is refused as an invalid choice) and how it narrows the
queryset. A later feature (rating, label, review status, prompt version) adds one entry to
`FILTERS`; the form, the URL, the "next page" link and the template pick it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import Avg, Count, Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from playground.accounts.models import Team
from playground.chat.models import Conversation, ConversationQuerySet, Message, RunGroup
from playground.chat.sidebar import Cursor, InvalidCursor
from playground.providers import catalog
from playground.review import search
from playground.review.models import Annotation, Label, ReviewStatus

PAGE_SIZE = 25
PERSONAL = "personal"


@dataclass(frozen=True)
class Filter:
    name: str
    field: Callable[[Any], forms.Field]  # user -> the form field, choices limited to the user
    apply: Callable[[ConversationQuerySet, Any], ConversationQuerySet]


def _choice(label: str, choices: list[tuple[str, str]]) -> forms.ChoiceField:
    return forms.ChoiceField(label=label, required=False, choices=[("", "Any"), *choices])


def _with_message(**lookups: Any) -> Exists:
    return Exists(Message.objects.filter(conversation=OuterRef("pk"), **lookups))


# -- space ------------------------------------------------------------------------------------


def _space_field(user: Any) -> forms.Field:
    teams = Team.objects.filter(memberships__user=user).order_by("name")
    return _choice("Space", [(PERSONAL, "Personal"), *((str(t.pk), t.name) for t in teams)])


def _space_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    if value == PERSONAL:
        return conversations.filter(team__isnull=True)
    return conversations.filter(team_id=int(value))


# -- model and endpoint -----------------------------------------------------------------------


def _model_field(user: Any) -> forms.Field:
    # The catalog's models, not the distinct models of every visible conversation: that
    # scan cost more than the rest of the page at 10k conversations.
    return _choice("Model", [(m.key, m.label) for m in catalog.all_models()])


def _endpoint_field(user: Any) -> forms.Field:
    return _choice("Endpoint", [(p.slug, p.name) for p in catalog.providers()])


# -- author -----------------------------------------------------------------------------------


def _author_field(user: Any) -> forms.Field:
    people = (
        get_user_model()
        .objects.filter(Q(pk=user.pk) | Q(memberships__team__memberships__user=user))
        .distinct()
        .order_by("username")
    )
    return _choice("Author", [(str(p.pk), p.get_username()) for p in people])


def _author_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    """Started the conversation or sent a message in it (teammates write in team ones)."""
    author = int(value)
    return conversations.filter(Q(owner_id=author) | _with_message(created_by_id=author))


# -- dates ------------------------------------------------------------------------------------


def _since_apply(conversations: ConversationQuerySet, day: date) -> ConversationQuerySet:
    # Its midnight east of UTC (the reader's zone) is before the first datetime there is,
    # where the database compares; and nothing is earlier.
    if day == date.min:
        return conversations
    start = timezone.make_aware(datetime.combine(day, time.min))
    return conversations.filter(updated__gte=start)


def _until_apply(conversations: ConversationQuerySet, day: date) -> ConversationQuerySet:
    if day == date.max:  # it has no next day to end before, and nothing is later
        return conversations
    end = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))
    return conversations.filter(updated__lt=end)


def _date_field(label: str) -> Callable[[Any], forms.Field]:
    def make(user: Any) -> forms.Field:
        return forms.DateField(
            label=label, required=False, widget=forms.DateInput(attrs={"type": "date"})
        )

    return make


def _flag_field(label: str) -> Callable[[Any], forms.Field]:
    def make(user: Any) -> forms.Field:
        return forms.BooleanField(label=label, required=False)

    return make


# -- prompt version and variable values ---------------------------------------------------------
# The prompts app records which version and values a reply came from (Message.prompt_run).
# Looked up by name, not imported: review builds on chat, and prompts plugs into it.


def _prompt_version_field(user: Any) -> forms.Field:
    prompt_model = apps.get_model("prompts", "Prompt")
    # A deleted prompt that replies came from is archived, not removed (Prompt.delete_by):
    # its versions stay choosable, so those replies are still found.
    versions = (
        apps.get_model("prompts", "PromptVersion")
        .objects.filter(prompt__in=prompt_model.objects.visible_to(user, deleted=True))
        .select_related("prompt")
        .order_by(F("prompt__deleted").asc(nulls_first=True), "prompt__name", "-number")[:500]
    )
    choices = [
        (str(v.pk), f"{v.prompt.name} v{v.number}{' (deleted)' if v.prompt.deleted else ''}")
        for v in versions
    ]
    return _choice("Prompt version", choices)


def _prompt_variable_field(user: Any) -> forms.Field:
    return forms.RegexField(
        label="Prompt variable",
        required=False,
        regex=r"^[A-Za-z_][A-Za-z0-9_]{0,63}=.*$",
        error_messages={"invalid": "Write name=value, e.g. topic=billing."},
        help_text="name=value: replies sent with that value",
    )


def _prompt_variable_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    name, _, wanted = value.partition("=")
    # __exact last: a variable may be called "contains" or "isnull", which would otherwise
    # be taken for a lookup, not a key.
    lookup = f"prompt_run__variables__{name}__exact"
    return conversations.filter(_with_message(**{lookup: wanted}))


FILTERS: list[Filter] = [
    Filter("space", _space_field, _space_apply),
    Filter("endpoint", _endpoint_field, lambda qs, v: qs.filter(model__startswith=f"{v}:")),
    Filter("model", _model_field, lambda qs, v: qs.filter(model=v)),
    Filter("author", _author_field, _author_apply),
    Filter(
        "status",
        lambda user: _choice("Has a reply that is", list(Message.Status.choices)),
        lambda qs, v: qs.filter(_with_message(role=Message.Role.ASSISTANT, status=v)),
    ),
    Filter("since", _date_field("Active from"), _since_apply),
    Filter("until", _date_field("Active until"), _until_apply),
    Filter(
        "images",
        _flag_field("Has images"),
        lambda qs, v: qs.filter(
            Exists(Message.attachments.through.objects.filter(message__conversation=OuterRef("pk")))
        ),
    ),
    Filter(
        "tools",
        _flag_field("Has tool calls"),
        lambda qs, v: qs.filter(
            Exists(
                Message.objects.filter(
                    conversation=OuterRef("pk"), role=Message.Role.ASSISTANT
                ).exclude(tool_calls=[])
            )
        ),
    ),
    Filter(
        "prompt_version",
        _prompt_version_field,
        lambda qs, v: qs.filter(_with_message(prompt_run__version_id=int(v))),
    ),
    Filter("prompt_var", _prompt_variable_field, _prompt_variable_apply),
]


# -- annotations and review status ------------------------------------------------------------


def _annotated(**lookups: Any) -> Exists:
    return Exists(Annotation.objects.filter(message__conversation=OuterRef("pk"), **lookups))


RATINGS = {
    "up": ("Has a thumbs up", lambda: _annotated(thumbs=1)),
    "down": ("Has a thumbs down", lambda: _annotated(thumbs=-1)),
    "rated": ("Rated at all", lambda: _annotated()),
}


def _rating_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    if value == "unrated":
        return conversations.exclude(_annotated())
    return conversations.filter(RATINGS[value][1]())


def _label_field(user: Any) -> forms.Field:
    labels = Label.objects.visible_to(user).select_related("team").order_by("name", "pk")
    return _choice(
        "Label",
        [(str(x.pk), f"{x.name} · {x.team.name if x.team else 'Personal'}") for x in labels],
    )


def _label_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    """The conversations with a reply carrying the label, found once from the label's side:
    a correlated EXISTS made SQLite walk the label's rows for every conversation (757 ms at
    10k conversations in bench/search.py; this is 20 ms of CPU)."""
    labelled = Annotation.labels.through.objects.filter(label_id=int(value))
    return conversations.filter(pk__in=labelled.values("annotation__message__conversation_id"))


def _review_apply(conversations: ConversationQuerySet, value: str) -> ConversationQuerySet:
    if value == ReviewStatus.Status.UNREVIEWED:  # no row is unreviewed too
        return conversations.exclude(
            Exists(ReviewStatus.objects.filter(conversation=OuterRef("pk")).exclude(status=value))
        )
    return conversations.filter(
        Exists(ReviewStatus.objects.filter(conversation=OuterRef("pk"), status=value))
    )


FILTERS += [
    Filter(
        "rating",
        lambda user: _choice(
            "Rating",
            [*((k, label) for k, (label, _) in RATINGS.items()), ("unrated", "Not rated")],
        ),
        _rating_apply,
    ),
    Filter(
        "score",
        lambda user: _choice("Has a score of", [(str(n), str(n)) for n in range(5, 0, -1)]),
        lambda qs, v: qs.filter(_annotated(score=int(v))),
    ),
    Filter("label", _label_field, _label_apply),
    Filter(
        "review",
        lambda user: _choice("Review status", list(ReviewStatus.Status.choices)),
        _review_apply,
    ),
]


class HistoryForm(forms.Form):
    q = forms.CharField(label="Search", required=False, strip=True)

    def __init__(self, user: Any, data: Any) -> None:
        super().__init__(data)
        for item in FILTERS:
            self.fields[item.name] = item.field(user)

    def clean_q(self) -> search.Query | None:
        raw = self.cleaned_data["q"]
        if not raw:
            return None
        try:
            return search.Query.parse(raw)
        except search.InvalidQuery as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "Ends before it starts.")
        return cleaned

    def query_string(self, **extra: str) -> str:
        """The filters as the user gave them: the URL of this view, and of its next page."""
        params = {k: v for k, v in self.data.items() if k in self.fields and v not in ("", None)}
        params.update(extra)
        return urlencode(params)


@dataclass
class Row:
    conversation: Conversation
    messages: int = 0
    snippets: list[search.Snippet] = field(default_factory=list)
    ratings: dict[str, Any] = field(default_factory=dict)  # ups, downs, score (mean)
    # The row's compare or sweep, when the user may delete it (RunGroup.may_delete).
    deletable_group: RunGroup | None = None


@dataclass
class Page:
    rows: list[Row]
    next_url: str
    # The search is made only of words the backend leaves out as too common (PostgreSQL's
    # stop words), so it can find nothing: the page says so instead of "Nothing matches".
    too_common: bool = False


def filtered(user: Any, form: HistoryForm) -> ConversationQuerySet:
    """Every conversation the user may see under the form's (valid) filters, search aside:
    History's pages and the review queues made from a History filter both start here."""
    conversations = Conversation.objects.visible_to(user)
    for item in FILTERS:
        value = form.cleaned_data.get(item.name)
        if value not in (None, "", False):
            conversations = item.apply(conversations, value)
    return conversations


def page(user: Any, form: HistoryForm, after: Cursor | None = None) -> Page:
    """One page of the user's History under the form's (valid) filters."""
    conversations = filtered(user, form)
    query: search.Query | None = form.cleaned_data.get("q")
    engine = search.backend()
    if after is not None:
        conversations = conversations.older_than(after.updated, after.pk)
    if query is not None:
        conversations = engine.matching(query, conversations, PAGE_SIZE + 1)
    # One row more than shown says whether there is another page, without a COUNT.
    found = list(
        conversations.select_related("owner", "team", "review").only(
            "id", "title", "model", "updated", "created", "owner__username", "team__name",
            "review__status", "group",
        )[: PAGE_SIZE + 1]
    )  # fmt: skip
    shown = found[:PAGE_SIZE]
    ids = [c.pk for c in shown]
    counts = dict(
        Message.objects.filter(conversation_id__in=ids)
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values_list("conversation_id", "n")
        .order_by()
    )
    snippets = engine.snippets(query, ids) if query is not None else {}
    ratings = _ratings(ids)
    groups = _deletable_groups(user, {c.group_id for c in shown if c.group_id})
    rows = [
        Row(
            c,
            counts.get(c.pk, 0),
            snippets.get(c.pk, []),
            ratings.get(c.pk, {}),
            groups.get(c.group_id) if c.group_id else None,
        )
        for c in shown
    ]
    next_url = ""
    if len(found) > PAGE_SIZE:
        after_shown = str(Cursor.after(shown[-1]))
        next_url = f"{reverse('review:history')}?{form.query_string(after=after_shown)}"
    too_common = query is not None and not rows and engine.too_common(query)
    return Page(rows, next_url, too_common)


def _deletable_groups(user: Any, ids: set[int]) -> dict[int, RunGroup]:
    """The compares and sweeps among `ids` that `user` may delete: one query for the page.
    (Experiment runs are deleted from their experiment, not from here.)"""
    if not ids:
        return {}
    kinds = (RunGroup.Kind.COMPARE, RunGroup.Kind.SWEEP)
    found = RunGroup.objects.deletable_by(user).filter(pk__in=ids, kind__in=kinds)
    return {g.pk: g for g in found.only("id", "kind", "title")}


def _ratings(ids: list[int]) -> dict[int, dict[str, Any]]:
    """Thumbs and mean score of each shown conversation's replies: one grouped query."""
    rows = (
        Annotation.objects.filter(message__conversation_id__in=ids)
        .values("message__conversation_id")
        .annotate(
            ups=Count("id", filter=Q(thumbs=1)),
            downs=Count("id", filter=Q(thumbs=-1)),
            score=Avg("score"),
        )
        .order_by()
    )
    return {row.pop("message__conversation_id"): row for row in rows}


def parse_cursor(raw: str | None) -> Cursor | None:
    """None for the first page; InvalidCursor for one that is not ours."""
    if not raw:
        return None
    return Cursor.parse(raw)


__all__ = [
    "FILTERS",
    "HistoryForm",
    "InvalidCursor",
    "Page",
    "Row",
    "filtered",
    "page",
    "parse_cursor",
]
