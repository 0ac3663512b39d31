from __future__ import annotations

from django.urls import URLPattern, path

from playground.review import views

app_name = "review"

urlpatterns: list[URLPattern] = [
    path("", views.history_page, name="history"),
]
