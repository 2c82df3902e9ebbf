"""The policy reference's YAML example is a real policy file."""

from __future__ import annotations

import re
from pathlib import Path

from actions.library import SHIPPED
from actions.policy import load_policies
from actions.registry import ActionRegistry

DOC = Path(__file__).parents[2] / "docs" / "actions.md"


def test_docs_policy_example_loads(tmp_path: Path) -> None:
    [example] = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    p = tmp_path / "example.yaml"
    p.write_text(example)
    pf = load_policies(p, ActionRegistry(SHIPPED))
    assert [x.name for x in pf.policies] == [
        "scale-orders-consumers", "restart-unit-on-errors", "tell-the-agent"]  # fmt: skip
    assert len(pf.maintenance) == 2 and "restart-unit" in pf.commands
