from __future__ import annotations

from django.urls import URLPattern, path

from playground.compare import views

app_name = "compare"

urlpatterns: list[URLPattern] = [
    path("", views.group_list, name="list"),
    path("new/", views.compare_new, name="new"),
    path("sweeps/new/", views.sweep_new, name="sweep_new"),
    path("<int:pk>/", views.group_page, name="group"),
    path("<int:pk>/delete/", views.group_delete, name="delete"),
    path("<int:pk>/diff/", views.group_diff, name="diff"),
    path("<int:pk>/columns/<int:column>/continue/", views.column_continue, name="continue"),
]
