from __future__ import annotations

from django.urls import path

from playground.chat.activity import ActivityConsumer
from playground.chat.consumers import ConversationConsumer
from playground.compare.consumers import GroupConsumer
from playground.experiments.consumers import RunProgressConsumer

websocket_urlpatterns = [
    path("ws/conversations/<int:pk>/", ConversationConsumer.as_asgi()),
    path("ws/teams/<int:pk>/activity/", ActivityConsumer.as_asgi()),
    path("ws/experiments/runs/<int:pk>/", RunProgressConsumer.as_asgi()),
    path("ws/groups/<int:pk>/", GroupConsumer.as_asgi()),
]
