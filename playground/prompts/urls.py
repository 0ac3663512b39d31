from __future__ import annotations

from django.urls import path

from playground.prompts import views

app_name = "prompts"

urlpatterns = [
    path("", views.prompt_list, name="list"),
    path("new/", views.prompt_new, name="new"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("playground/<int:conversation_pk>/save/", views.playground_save, name="playground_save"),
    path("<int:pk>/", views.prompt_detail, name="detail"),
    path("<int:pk>/rename/", views.prompt_rename, name="rename"),
    path("<int:pk>/delete/", views.prompt_delete, name="delete"),
    path("<int:pk>/versions/new/", views.version_new, name="version_new"),
    path("<int:pk>/diff/", views.version_diff, name="diff"),
    path("<int:pk>/labels/", views.label_set, name="label_set"),
    path("<int:pk>/labels/<int:label_pk>/protect/", views.label_protect, name="label_protect"),
    path("<int:pk>/v/<int:number>/", views.version_detail, name="version"),
    path("<int:pk>/v/<int:number>/restore/", views.version_restore, name="version_restore"),
    path("<int:pk>/v/<int:number>/open/", views.version_open, name="version_open"),
]
