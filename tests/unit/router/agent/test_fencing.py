"""The fence book alone: which pushes pass, what it remembers on disk."""

from __future__ import annotations

import os

import pytest

from router.agent.fencing import Fences
from router.errors import FencedPush


def test_older_epoch_refused_and_highest_persisted(tmp_path: object) -> None:
    fences = Fences(str(tmp_path))
    fences.admit("r1", 3, 10, 9)
    with pytest.raises(FencedPush, match="epoch 2 refused: epoch 3"):
        fences.admit("r1", 2, 11, 10)
    # Another router has its own epochs.
    fences.admit("r2", 1, 1, 0)
    reread = Fences(str(tmp_path))
    assert reread.epoch("r1") == 3
    assert oct(os.stat(os.path.join(str(tmp_path), "fences", "r1")).st_mode & 0o777) == "0o600"
    with pytest.raises(FencedPush):
        reread.admit("r1", 0, 12, 10)  # an unfenced caller once a fenced one pushed


def test_older_generation_refused_same_generation_passes(tmp_path: object) -> None:
    fences = Fences(str(tmp_path))
    with pytest.raises(FencedPush, match=r"generation 4 .* runs generation 5"):
        fences.admit("r1", 7, 4, 5)
    assert fences.epoch("r1") == 0  # nothing recorded by a refusal
    fences.admit("r1", 7, 5, 5)  # the same generation again (a restart, secrets)
    fences.admit("r1", 7, None, 5)  # a delete checks the epoch only
    fences.forget("r1")
    assert Fences(str(tmp_path)).epoch("r1") == 0
