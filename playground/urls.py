from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from playground.accounts import endpoints, teams
from playground.accounts import views as accounts
from playground.chat import activity, usage
from playground.chat import views as chat
from playground.prompts import views as prompts

urlpatterns = [
    path("", chat.home, name="home"),
    path("c/", chat.conversation_page, name="conversation_page"),
    path("c/new/", chat.conversation_new, name="conversation_new"),
    path("c/<int:pk>/", chat.conversation_detail, name="conversation"),
    path("c/<int:pk>/rename/", chat.conversation_rename, name="conversation_rename"),
    path("c/<int:pk>/item/", chat.conversation_sidebar_item, name="conversation_item"),
    path("c/<int:pk>/delete/", chat.conversation_delete, name="conversation_delete"),
    path("c/<int:pk>/move/", chat.conversation_move, name="conversation_move"),
    path("c/<int:pk>/settings/", chat.conversation_settings, name="conversation_settings"),
    path("c/<int:pk>/reset/", chat.conversation_reset, name="conversation_reset"),
    path("c/<int:pk>/presets/", chat.preset_save, name="preset_save"),
    path("c/<int:pk>/presets/<int:preset_pk>/load/", chat.preset_load, name="preset_load"),
    path("c/<int:pk>/presets/<int:preset_pk>/rename/", chat.preset_rename, name="preset_rename"),
    path("c/<int:pk>/presets/<int:preset_pk>/delete/", chat.preset_delete, name="preset_delete"),
    path("m/<int:pk>/code/", chat.message_code, name="message_code"),
    path("attachments/", chat.attachment_upload, name="attachment_upload"),
    path("attachments/<int:pk>/", chat.attachment_file, name="attachment_file"),
    path("space/", chat.space_switch, name="space_switch"),
    path("teams/", teams.teams, name="teams"),
    path("teams/<int:pk>/", teams.team_detail, name="team"),
    path("teams/<int:pk>/members/", teams.member_add, name="member_add"),
    path("teams/<int:pk>/members/<int:member_pk>/role/", teams.member_role, name="member_role"),
    path(
        "teams/<int:pk>/members/<int:member_pk>/remove/",
        teams.member_remove,
        name="member_remove",
    ),
    path("teams/<int:pk>/activity/", activity.activity_page, name="team_activity"),
    path("teams/<int:pk>/usage/", usage.usage_team, name="team_usage"),
    path("teams/<int:pk>/usage/<str:table>.csv", usage.usage_csv_team, name="team_usage_csv"),
    path("teams/<int:pk>/budgets/", usage.budget_save_team, name="team_budget_save"),
    path("usage/", usage.usage_personal, name="usage"),
    path("usage/<str:table>.csv", usage.usage_csv_personal, name="usage_csv"),
    path("usage/budgets/", usage.budget_save_personal, name="budget_save"),
    path("teams/<int:pk>/leave/", teams.team_leave, name="team_leave"),
    path("teams/<int:pk>/invitations/", teams.invite_create, name="invite_create"),
    path(
        "teams/<int:pk>/invitations/<int:invite_pk>/revoke/",
        teams.invite_revoke,
        name="invite_revoke",
    ),
    path("teams/<int:pk>/keys/", teams.team_key_save, name="team_key_save"),
    path(
        "teams/<int:pk>/keys/<slug:provider>/delete/",
        teams.team_key_delete,
        name="team_key_delete",
    ),
    path("invite/", teams.invite_accept, name="invite"),
    path("keys/", accounts.keys, name="keys"),
    path("keys/<slug:provider>/delete/", accounts.key_delete, name="key_delete"),
    path("endpoints/", endpoints.endpoints, name="endpoints"),
    path("endpoints/<int:pk>/", endpoints.endpoint, name="endpoint"),
    path("endpoints/<int:pk>/delete/", endpoints.endpoint_delete, name="endpoint_delete"),
    path("endpoints/<int:pk>/test/", endpoints.endpoint_test, name="endpoint_test"),
    path("endpoints/<int:pk>/discover/", endpoints.endpoint_discover, name="endpoint_discover"),
    path("endpoints/<int:pk>/models/", endpoints.endpoint_models_add, name="endpoint_models_add"),
    path(
        "endpoints/<int:pk>/models/<int:model_pk>/",
        endpoints.endpoint_model,
        name="endpoint_model",
    ),
    path(
        "endpoints/<int:pk>/models/<int:model_pk>/delete/",
        endpoints.endpoint_model_delete,
        name="endpoint_model_delete",
    ),
    path(
        "endpoints/<int:pk>/models/<int:model_pk>/probe/",
        endpoints.endpoint_model_probe,
        name="endpoint_model_probe",
    ),
    path("setup/", accounts.setup, name="setup"),
    path("signup/", accounts.signup, name="signup"),
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("review/", include("playground.review.urls")),
    path("prompts/", include("playground.prompts.urls")),
    path("api/prompts/<str:name>", prompts.api_prompt, name="api_prompt"),
    path("experiments/", include("playground.experiments.urls")),
    path("compare/", include("playground.compare.urls")),
    path("admin/", admin.site.urls),
]
