"""docs/lifecycle.md shows the state diagram the code's own table draws."""

from __future__ import annotations

from pathlib import Path

import airp

DOC = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"


def test_the_state_diagram_in_the_docs_is_the_one_the_table_draws() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert airp.pnp_state_diagram() in text


def test_the_diagram_has_one_edge_per_transition() -> None:
    diagram = airp.pnp_state_diagram()
    for (state, minor), target in airp.PNP_TRANSITIONS.items():
        assert f"{state.name} --> {target.name}: {minor.name}" in diagram
    edges = [line for line in diagram.splitlines() if "-->" in line and "[*]" not in line]
    assert len(edges) == len(airp.PNP_TRANSITIONS)
