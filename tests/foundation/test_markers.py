"""Test conventions that keep GPU tests running on a GPU: a CUDA-only test carries the ``cuda`` mark
(conftest.py skips those without a GPU, and ``pytest -m cuda`` selects them on one), never a plain
skip that a GPU session cannot select."""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PLAIN_CUDA_SKIP = re.compile(r"skip(if)?\([^)]*cuda\.is_available|importorskip\([^)]*cuda")


def test_cuda_only_tests_use_the_cuda_mark():
    offenders = [f"{p.relative_to(TESTS)}:{n}" for p in sorted(TESTS.rglob("*.py"))
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if PLAIN_CUDA_SKIP.search(line) and p.name != Path(__file__).name]
    assert offenders == [], f"use @pytest.mark.cuda instead of a plain skip: {offenders}"


def test_cuda_marked_tests_exist_and_are_collected_as_such(pytestconfig):
    marked = [p for p in TESTS.rglob("test_*.py") if "@pytest.mark.cuda" in p.read_text(encoding="utf-8")]
    names = {p.name for p in marked}
    assert {"test_runner.py", "test_device_batches.py", "test_beam_search.py", "test_bf16.py"} <= names
    assert "cuda: needs a CUDA GPU" in "\n".join(pytestconfig.getini("markers"))
