"""Record entries take their table section from the registry's model groups (no model names in the benchmark)."""

from __future__ import annotations

from recbole_ext import registry
from recbole_ext.benchmark.collect import GROUP_ORDER, UNKNOWN_GROUP, CellInfo, default_group, record_entries


def record(model: str) -> dict:
    return {"model": model, "dataset": "ml-100k", "seed": 1, "run_id": f"{model}-1", "test": {"ndcg@10": 0.1}}


def test_sections_follow_the_registry_groups():
    assert GROUP_ORDER == ("Traditional", "Generative", "Reasoning")
    assert [default_group(m) for m in ("GRU4Rec", "BPR", "TIGER", "STREAMRec")] == [
        "Traditional", "Traditional", "Generative", "Reasoning"]
    assert default_group("NotRegistered") == UNKNOWN_GROUP == "Other"


def test_a_new_plugin_is_sectioned_by_its_declared_group():
    assert record_entries(record("ThinkRec"))[0].group == "Other"
    registry.register("ThinkRec", "foundation.not_a_module:ThinkRec", group="reasoning")
    try:
        assert record_entries(record("ThinkRec"))[0].group == "Reasoning"
        info = CellInfo("Think", "Ablations")  # a suite's group wins over the registry's
        assert record_entries(record("ThinkRec"), info)[0].group == "Ablations"
    finally:
        registry.unregister("ThinkRec")
