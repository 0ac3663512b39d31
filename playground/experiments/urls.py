from __future__ import annotations

from django.urls import path

from playground.experiments import views

app_name = "experiments"

urlpatterns = [
    path("", views.index, name="index"),
    path("datasets/", views.dataset_upload, name="dataset_upload"),
    path("datasets/add-reply/", views.dataset_add_reply, name="dataset_add_reply"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/rows/", views.dataset_row_add, name="dataset_row_add"),
    path(
        "datasets/<int:pk>/rows/from-reply/",
        views.dataset_row_from_reply,
        name="dataset_row_from_reply",
    ),
    path("datasets/<int:pk>/rows/<int:row_pk>/", views.dataset_row_save, name="dataset_row"),
    path("new/", views.experiment_new, name="experiment_new"),
    path("<int:pk>/", views.experiment_detail, name="experiment"),
    path("<int:pk>/run/", views.experiment_run, name="experiment_run"),
    path("runs/<int:pk>/", views.run_page, name="run"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/stop/", views.run_stop, name="run_stop"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("runs/<int:pk>/recheck/", views.run_recheck, name="run_recheck"),
    path("runs/<int:pk>/compare/", views.run_compare, name="run_compare"),
    path("runs/<int:pk>/export.<str:fmt>", views.run_export, name="run_export"),
]
