from playground.chat.diffing import MAX_BLOCK_TOKENS, ParamChange, params_diff, word_diff


def joined(segments, ops):
    return "".join(s.text for s in segments if s.op in ops)


def test_each_side_reads_back_as_its_text():
    a = "The cat sat on the mat.\nIt was warm.\n"
    b = "The dog sat on a mat.\nIt was warm.\nThe end."
    diff = word_diff(a, b)
    assert joined(diff.left, {"equal", "delete"}) == a
    assert joined(diff.right, {"equal", "insert"}) == b
    assert [s.text for s in diff.left if s.op == "delete"] == ["cat", "the"]
    assert [s.text for s in diff.right if s.op == "insert"] == ["dog", "a", "The end."]
    assert diff.changed
    assert (diff.words_deleted, diff.words_inserted) == (2, 4)


def test_identical_texts_have_no_changes():
    diff = word_diff("same words\n", "same words\n")
    assert not diff.changed
    assert [s.op for s in diff.left] == ["equal"]


def test_adjacent_segments_of_one_kind_merge():
    diff = word_diff("a b c", "x y z")
    for side in (diff.left, diff.right):
        ops = [s.op for s in side]
        assert all(a != b for a, b in zip(ops, ops[1:], strict=False))
    assert [s.op for s in diff.left] == ["delete", "equal", "delete", "equal", "delete"]


def test_a_huge_changed_block_is_shown_whole():
    a = "word " * MAX_BLOCK_TOKENS
    b = "other " * MAX_BLOCK_TOKENS
    diff = word_diff(a, b)
    assert diff.left == [type(diff.left[0])("delete", a)]
    assert joined(diff.right, {"insert"}) == b


def test_params_diff_treats_missing_and_none_as_unset():
    changes = params_diff(
        {"temperature": 0.7, "top_p": None, "seed": 1}, {"temperature": 1.2, "seed": 1, "top_k": 40}
    )
    assert changes == [
        ParamChange("temperature", 0.7, 1.2),
        ParamChange("top_k", None, 40),
    ]
