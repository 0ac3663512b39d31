"""Endpoints saved before per-model rows keep their models."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("providers", "0001_initial")]
AFTER = [("providers", "0002_endpoint_models")]


@pytest.mark.django_db(transaction=True)
def test_one_id_per_line_becomes_one_row_per_model() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    old.get_model("providers", "CustomEndpoint").objects.create(
        slug="lab",
        name="Lab",
        base_url="http://gpu-box:8000/v1",
        model_ids="gemma-a\n  gemma-b \n\ngemma-a\n",
        context_window=4096,
        max_output=512,
        supports_images=True,
    )
    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    rows = new.get_model("providers", "EndpointModel").objects.order_by("model_id")
    assert [(r.model_id, r.context_window, r.max_output, r.images, r.offered) for r in rows] == [
        ("gemma-a", 4096, 512, True, True),
        ("gemma-b", 4096, 512, True, True),
    ]
    assert new.get_model("providers", "CustomEndpoint").objects.get().param_groups == ["openai"]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
