"""The NUL-character, lone-surrogate and column-length tests again, on PostgreSQL: it refuses
NUL in text, \\u0000 and a lone \\ud800 in jsonb and a string longer than its varchar, all of
which SQLite stores as they come (neither takes a lone surrogate in text), so only there does
a missed one fail the save.

In its own process because settings read DATABASE_URL once, at start-up; the same rules as
tests/test_search_postgres.py (under CI=true an unreachable server fails, elsewhere skips)."""

from __future__ import annotations

from tests.scaleout import pytest_on_postgresql

# What a user sends holding either: refused where it is read, before anything is saved.
REFUSED = [
    "tests/test_streaming.py::test_a_nul_or_lone_surrogate_in_a_message_is_refused_not_a_crash",
    "tests/test_tool_calls.py::test_a_tool_result_holding_a_nul_or_lone_surrogate_is_refused",
    "tests/test_system_prompt.py::"
    "test_the_panel_and_a_preset_refuse_a_system_prompt_holding_a_nul_or_lone_surrogate",
    "tests/test_system_prompt.py::"
    "test_sending_a_system_prompt_holding_a_nul_or_lone_surrogate_is_refused",
    "tests/test_params.py::"
    "test_a_parameter_holding_a_nul_or_lone_surrogate_is_refused_over_the_socket",
    "tests/test_params.py::test_the_panel_keeps_the_valid_parameters_and_refuses_one_holding_a_nul",
    "tests/test_prompt_playground.py::test_a_value_holding_a_nul_or_lone_surrogate_blocks_the_send",
    "tests/test_prompts.py::test_a_nul_or_lone_surrogate_in_a_message_or_the_parameters_is_refused",
    "tests/test_compare.py::test_a_compare_send_holding_a_nul_or_lone_surrogate_is_refused",
    "tests/test_experiments.py::test_a_nul_in_a_dataset_is_refused_not_a_crash",
    "tests/test_experiments.py::test_a_lone_surrogate_in_a_dataset_is_refused_as_a_nul_is",
    "tests/test_experiments.py::"
    "test_a_nul_or_lone_surrogate_in_an_experiments_parameters_or_schema_is_a_form_error",
    # Text a view reads from the request itself: no form field refuses a NUL for it.
    "tests/test_conversations.py::test_a_title_holding_a_nul_is_refused_not_a_crash",
    "tests/test_panel.py::test_a_preset_name_holding_a_nul_is_refused_when_saved_or_renamed",
    "tests/test_review_annotations.py::test_a_comment_holding_a_nul_is_refused_not_a_crash",
    "tests/test_review_annotations.py::"
    "test_a_label_name_holding_a_nul_is_refused_when_made_or_renamed",
    "tests/test_review_queues.py::test_a_queue_name_holding_a_nul_is_refused_not_a_crash",
    "tests/test_review_queues.py::test_a_comment_holding_a_nul_is_refused_and_changes_nothing",
    "tests/test_review_import.py::"
    "test_a_file_holding_a_nul_or_lone_surrogate_anywhere_is_refused_with_its_line",
    "tests/test_compare.py::test_a_title_holding_a_nul_is_refused_and_saves_nothing",
    "tests/test_sweeps.py::test_a_title_or_message_holding_a_nul_is_refused_and_saves_nothing",
    "tests/test_prompt_api.py::test_a_token_name_holding_a_nul_is_refused_not_a_crash",
    "tests/test_prompt_api.py::"
    "test_a_prompt_or_label_asked_for_with_a_nul_is_not_found_not_a_crash",
    "tests/test_endpoints_page.py::test_a_listed_model_id_holding_a_nul_is_refused_not_a_crash",
]


def test_nul_characters_are_saved_on_postgresql(tmp_path):
    output = pytest_on_postgresql(
        "faults",
        tmp_path,
        [
            "tests/test_faults.py",
            "tests/test_experiments.py::"
            "test_a_judges_reason_or_a_schema_path_holding_a_nul_or_lone_surrogate_is_kept",
            "-k",
            "nul_character or surrogate or finish_reason_longer",
        ],
    )
    assert "\n8 passed" in output and "skipped" not in output


def test_nul_characters_a_user_sends_are_refused_on_postgresql(tmp_path):
    output = pytest_on_postgresql("refused", tmp_path, REFUSED)
    assert "\n40 passed" in output and "skipped" not in output
