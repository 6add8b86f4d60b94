"""The whole graph as a reviewer should see it change: assets (deps, group, kinds, owners,
tags, freshness, automation), checks (blocking or not), jobs' selections, sensors and schedules.

An intended change to the graph updates the snapshot in the same commit:
`python -m tests.test_graph_snapshot` rewrites tests/snapshots/graph.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from personalization_pipeline.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.json"
KIND_TAG = "dagster/kind/"  # already listed as kinds


def graph_facts(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        checks = graph.get_check_keys_for_assets({key})
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith(KIND_TAG)},
            "freshness": _freshness(node),
            "automation": str(node.automation_condition) if node.automation_condition else None,
            "checks": {
                check.name: {"blocking": graph.get_check_spec(check).blocking}
                for check in sorted(checks, key=lambda c: c.name)
            },
        }
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        for job in sorted(definitions.resolve_all_job_defs(), key=lambda j: j.name)
        if not job.name.startswith("__")
    }
    sensors = {
        sensor.name: {
            "jobs": sorted(job.name for job in sensor.jobs),
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
        }
        for sensor in sorted(definitions.sensors or [], key=lambda s: s.name)
    }
    schedules = {
        schedule.name: {
            "job": schedule.job_name,
            "cron": schedule.cron_schedule,
            "default_status": schedule.default_status.value,
        }
        for schedule in sorted(definitions.schedules or [], key=lambda s: s.name)
    }
    return {"assets": assets, "jobs": jobs, "sensors": sensors, "schedules": schedules}


def _freshness(node) -> str | None:
    policy = getattr(node, "freshness_policy", None)
    if policy is None:
        return None
    warn, fail = (window.to_timedelta() for window in (policy.warn_window, policy.fail_window))
    return f"warn after {warn}, fail after {fail}"


def test_the_graph_matches_its_snapshot():
    assert graph_facts(defs) == json.loads(SNAPSHOT.read_text()), (
        "The asset graph changed. If intended, run `python -m tests.test_graph_snapshot` and "
        "commit tests/snapshots/graph.json with the change"
    )


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(graph_facts(defs), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")


def test_the_readme_picture_of_the_graph_is_current():
    from personalization_pipeline.graph_picture import readme_block

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert readme_block(defs) in readme, (
        "README.md's asset graph is stale: run .venv/bin/personalization graph --write-readme"
    )
