"""Every module's tests can be found: ``test_<module>.py`` exists, or tests/README.md names the
module (by its path) in its coverage table, and every test file that table names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "tests" / "README.md"


def _table() -> dict[str, list[str]]:
    """Module paths (``msm_megatron/...py``) → the test files their row names."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if len(cells) < 3 or not cells[1].strip().startswith("`msm_megatron/"):
            continue
        names = re.findall(r"`([^`]+\.py)`", cells[1])
        folder = names[0].rpartition("/")[0]
        tests = re.findall(r"`((?:unit|integration|distributed|slurm|vllm)/test_\w+\.py)`",
                           cells[2])
        for name in names:
            rows[name if "/" in name else f"{folder}/{name}"] = tests
    return rows


def test_every_module_has_a_test_of_its_name_or_a_line_in_the_readme():
    have = {p.stem.removeprefix("test_") for p in (REPO / "tests").rglob("test_*.py")}
    table = _table()
    missing = [str(p.relative_to(REPO)) for p in sorted((REPO / "msm_megatron").rglob("*.py"))
               if p.name != "__init__.py" and p.stem not in have
               and str(p.relative_to(REPO)) not in table]
    assert not missing, "add a test or a line to tests/README.md for: " + ", ".join(missing)


def test_the_readme_names_real_modules_and_tests():
    table = _table()
    assert len(table) > 40  # the table was read at all
    for module, tests in table.items():
        assert (REPO / module).is_file(), f"tests/README.md names {module}, which does not exist"
        assert tests, f"tests/README.md: no test named for {module}"
        for test in tests:
            assert (REPO / "tests" / test).is_file(), f"tests/README.md names tests/{test}"
