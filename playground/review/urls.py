from __future__ import annotations

from django.urls import URLPattern, path

from playground.review import annotation_views, queue_views, views

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

urlpatterns += [
    path("c/<int:pk>/review/", annotation_views.conversation_review, name="conversation_review"),
    path("c/<int:pk>/status/", annotation_views.set_status, name="status"),
    path("m/<int:pk>/", annotation_views.reply, name="reply"),
    path("m/<int:pk>/annotate/", annotation_views.annotate, name="annotate"),
    path("m/<int:pk>/comment/", annotation_views.comment, name="comment"),
    path("bulk/", annotation_views.bulk, name="bulk"),
    path("inbox/", annotation_views.inbox, name="inbox"),
    path("inbox/read/", annotation_views.inbox_read, name="inbox_read"),
    path("inbox/<int:pk>/open/", annotation_views.inbox_open, name="inbox_open"),
    path("labels/", annotation_views.labels_current, name="labels"),
    path("labels/personal/", annotation_views.labels_personal, name="labels_personal"),
    path("labels/team/<int:team_id>/", annotation_views.labels_team, name="labels_team"),
    path("labels/<int:pk>/edit/", annotation_views.label_edit, name="label_edit"),
    path("labels/<int:pk>/delete/", annotation_views.label_delete, name="label_delete"),
]

# Review queues (review/queues.py).
urlpatterns += [
    path("queues/", queue_views.queue_list, name="queues"),
    path("queues/new/", queue_views.queue_new, name="queue_new"),
    path("queues/<int:pk>/", queue_views.queue_summary, name="queue"),
    path("queues/<int:pk>/delete/", queue_views.queue_delete, name="queue_delete"),
    path("queues/<int:pk>/reassign/", queue_views.queue_reassign, name="queue_reassign"),
    path("queues/<int:pk>/review/", queue_views.queue_start, name="queue_start"),
    path("queues/<int:pk>/review/<int:position>/", queue_views.queue_item, name="queue_item"),
]
