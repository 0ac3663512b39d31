from __future__ import annotations

from django.urls import URLPattern, path

from playground.review import views

app_name = "review"

urlpatterns: list[URLPattern] = [
    path("", views.history_page, name="history"),
    path("c/<int:pk>/share/", views.share_new, name="share_new"),
    path("c/<int:pk>/export.<str:fmt>", views.export, name="export"),
    path("diff/", views.diff_page, name="diff"),
    path("import/", views.import_page, name="import"),
    path("shared/", views.share_links, name="share_links"),
    path("shared/<int:pk>/revoke/", views.share_revoke, name="share_revoke"),
    path("s/<str:token>/", views.shared_page, name="shared"),
]
