"""`RunRecord` is result.json: its fields are the keys real runs write, in their order, and records
written before it existed (tests/data/records_f5b5766, by commit f5b5766) load and write back unchanged."""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from benchmark.run import records, runner
from benchmark.run.run_record import ABSENT, field_names, RunRecord
from test_runner import BAD_MODEL, TINY_UNET, blobs, run_args, write_suite  # noqa: F401 (fixture)

OLD = Path(__file__).parent / "data" / "records_f5b5766"
OLD_RECORDS = sorted(OLD.glob("*.json"))
# Values the same on any machine and in any folder (the rest hold times, paths, the CPU's precision
# and numbers trained in it): compared between the old records and the current code's.
STABLE = ("status", "error", "suite", "entry", "variant", "label", "model", "modality", "seed", "preset", "external",
          "params", "flops", "overrides", "transfer", "world_size", "postprocessing", "metrics_convention",
          "preprocessing", "shard")


@pytest.fixture(scope="module")
def fresh(blobs, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """Records written by the current code at the points the old ones were: ok, failed while building
    the model, failed in the test stage (after fit)."""
    import benchmark.run.stages.test as test_stage

    out = tmp_path_factory.mktemp("records")  # suite and entry names as in the old records
    suite = write_suite(out / "suite", "oldcode", {"tiny": TINY_UNET, "broken": BAD_MODEL})
    assert runner.main(run_args(suite, blobs, out / "out")) == 0
    late = write_suite(out / "suite_late", "latefail", {"late": TINY_UNET})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_stage, "evaluate", _scoring_fails)
        assert runner.main(run_args(late, blobs, out / "out")) == 1

    def read(suite: str, variant: str) -> dict:
        return json.loads((records.run_dir(out / "out", suite, variant, "ct", 0) / "result.json").read_text())

    return {"ok.json": read("oldcode", "tiny"), "failed_building_the_model.json": read("oldcode", "broken"),
            "failed_in_the_test_stage.json": read("latefail", "late")}


def _scoring_fails(*args, **kwargs):
    raise RuntimeError("scoring failed on purpose")


def test_fields_are_the_keys_of_a_real_result_json_in_order(fresh):
    ok, failed = fresh["ok.json"], fresh["failed_in_the_test_stage.json"]
    assert ok["status"] == "ok" and failed["status"] == "failed"
    assert list(ok) == [name for name in field_names() if name != "traceback"]  # only a failure has one
    assert set(ok) | set(failed) == set(field_names())


@pytest.mark.parametrize("name", [p.name for p in OLD_RECORDS])
def test_the_current_code_writes_what_the_old_code_wrote(fresh, name):
    """Same keys in the same order for the same outcome, the same values where they do not depend on
    the machine, the folder or the clock."""
    old, new = json.loads((OLD / name).read_text()), fresh[name]
    if new["error"]:  # the cpu preset's smoke layer sets warmup_steps since the fixed warm-up, and the preset forces
        # ema_decay since the weight average; apart from those the message is the old one
        new = {**new, "error": new["error"].replace(", 'warmup_steps': None", "").replace(", 'ema_decay': 0.99", "")}
    added = {"key": "model.init_args.ema_decay", "entry": None, "used": 0.99, "source": "preset cpu (forced)"}
    if old.get("overrides") is not None:  # the one override the preset gained since: there, and nothing else new
        assert added in new["overrides"]
        new = {**new, "overrides": [o for o in new["overrides"] if o != added]}
    if new.get("postprocessing") == {"largest_component": True, "opening_mm": 6.0}:  # the preset's opening since
        new = {**new, "postprocessing": {"largest_component": True}}                   # session 42, nothing else new
    assert list(new) == list(old)
    assert {k: new[k] for k in STABLE if k in new} == {k: old[k] for k in STABLE if k in old}
    assert list(new["durations"]) == list(old["durations"])
    for key, varying in (("test_set", "name"), ("checkpoint", "val_dice")):
        if old.get(key) is not None:
            assert {**new[key], varying: None} == {**old[key], varying: None}, key
    if old.get("budget") is not None:  # since the old code: the drops' reasons, the rule's drop_by (cpu: 0.6) and
        # first_min_points (cpu: 10), and the seconds spent validating
        budget, rule = dict(new["budget"]), dict(new["budget"]["rule"])
        assert rule.pop("drop_by") == 0.6 and rule.pop("first_min_points") == 10
        assert budget.pop("lr_drop_reasons") is not None
        assert 0 <= budget.pop("validation_seconds") <= budget["seconds"]
        new = {**new, "budget": {**budget, "rule": rule}}
        same = ("unit", "steps", "samples_per_step", "samples", "limit", "stop_reason", "rule")
        assert list(new["budget"]) == list(old["budget"])
        assert {k: new["budget"][k] for k in same} == {k: old["budget"][k] for k in same}


@pytest.mark.parametrize("path", OLD_RECORDS, ids=lambda p: p.name)
def test_an_old_result_json_round_trips_byte_for_byte(path, tmp_path):
    data = json.loads(path.read_text())
    record = RunRecord.from_dict(data)
    assert record.to_dict() == data and list(record.to_dict()) == list(data)
    assert records.write_result(tmp_path, record.to_dict()).read_bytes() == path.read_bytes()


def test_missing_fields_stay_missing_and_unknown_ones_are_refused():
    """Records of older versions lack later fields (here: a source run's record in tests/test_transfer.py)."""
    minimal = {"status": "failed", "error": "RuntimeError: out of memory"}
    record = RunRecord.from_dict(minimal)
    assert record.suite is ABSENT and record.traceback is ABSENT and not record.suite
    assert record.to_dict() == minimal
    with pytest.raises(ValueError, match="unknown fields \\['score'\\]"):
        RunRecord.from_dict({**minimal, "score": 1})


def test_absent_is_one_object_through_copy_and_pickle():
    record = RunRecord.from_dict({"status": "ok"})
    for again in (copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert again.to_dict() == {"status": "ok"} and again.finished is ABSENT
