"""Reading and running the shared vectors in proto/testdata/compute/v1/.

A vector file is `{"spec_version": 1, "cases": [{"name", "input",
"expected"}]}`. Any text in an input (`text`, `a`, `b`, a document's `text`)
is either a JSON string or a generator `{"repeat": "<unit>", "times": N}`
standing for the unit repeated N times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.reference import text_analytics

SPEC_VERSION = text_analytics.SPEC_VERSION
VECTOR_DIR = (
    Path(__file__).resolve().parents[3] / "proto" / "testdata" / "compute" / f"v{SPEC_VERSION}"
)
RPC_FILES = {
    "analyze": "analyze.json",
    "compare": "compare.json",
    "find_near_duplicates": "find_near_duplicates.json",
}


def expand_text(value: Any) -> str:
    """A literal string, or `{"repeat": unit, "times": n}` for unit * n."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, dict)
        and set(value) == {"repeat", "times"}
        and isinstance(value["repeat"], str)
        and isinstance(value["times"], int)
        and value["times"] >= 0
    ):
        return value["repeat"] * value["times"]
    raise ValueError(f"not a text or a text generator: {value!r}")


def run_case(rpc: str, case_input: dict[str, Any]) -> Any:
    """What the reference answers to one case's input, as plain data."""
    if rpc == "analyze":
        return text_analytics.analyze(expand_text(case_input["text"]), case_input["top_k"])
    if rpc == "compare":
        return text_analytics.compare(expand_text(case_input["a"]), expand_text(case_input["b"]))
    if rpc == "find_near_duplicates":
        documents = [(doc["id"], expand_text(doc["text"])) for doc in case_input["documents"]]
        return text_analytics.find_near_duplicates(documents, case_input["threshold"])
    raise ValueError(f"unknown rpc {rpc!r}")


def encode(document: Any) -> str:
    """The canonical text of a vector file."""
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def load(rpc: str, directory: Path = VECTOR_DIR) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / RPC_FILES[rpc]).read_text("utf-8"))
    return document
