"""The benchmark's driver and profiles (bench/): every profile names only
variables it has, and notifier's render a configuration notifier accepts.
Running the benchmark itself is ``make bench``, not the suite."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from notifier.config import parse_config

BENCH = Path(__file__).resolve().parent.parent / "bench"
PROFILES = sorted(path.stem for path in (BENCH / "targets").glob("*.toml"))


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("bench_harness", BENCH / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _harness()


def _variables(profile: dict[str, Any]) -> dict[str, str]:
    env = {"run": "/tmp/run", "dir": profile["_dir"], "bench": str(BENCH), "nofile": "1024"}
    env.update({k: str(v) for k, v in profile.get("vars", {}).items()})
    for step in profile.get("setup", []):
        env.update({var: "captured" for var in step.get("capture", {})})
    return env


def test_the_benchmark_compares_notifier_with_nchan():
    assert {"notifier", "nchan-1w"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_a_profile_uses_only_variables_it_has(name):
    profile = harness.load_profile(name)
    env = _variables(profile)
    for template in profile.get("files", {}).values():
        harness.substitute((Path(profile["_dir"]) / template).read_text(), env)
    harness.substitute(profile["server"], env)
    harness.substitute(profile.get("setup", []), env)
    harness.substitute(profile.get("loadgen", {}).get("args", []), env)


def test_an_unknown_variable_is_refused():
    with pytest.raises(RuntimeError, match="nope"):
        harness.substitute("a ${nope} b", {"run": "x"})
    assert harness.substitute(["${a}-${b}", {"k": "${a}"}], {"a": "1", "b": "2"}) == ["1-2", {"k": "1"}]


@pytest.mark.parametrize("name", [name for name in PROFILES if name.startswith("notifier")])
def test_notifier_s_profiles_render_a_configuration_it_accepts(name):
    profile = harness.load_profile(name)
    env = _variables(profile)
    for template in profile.get("files", {}).values():
        text = harness.substitute((Path(profile["_dir"]) / template).read_text(), env)
        if template.endswith(".toml.in"):
            config = parse_config(text)
            assert config.api.admin_token == env["admin_token"]
    # the load generator publishes as the publisher the set-up creates
    args = " ".join(profile["loadgen"]["args"])
    assert "basic:${publisher}:${secret}" in args and "secret" in _variables(profile)


def test_the_table_gives_medians_and_ratios_to_the_first_target():
    results = [
        {"target": "nchan-1w", "deliveries_per_s": 200.0, "lost": 0},
        {"target": "nchan-1w", "deliveries_per_s": 100.0, "lost": 0},
        {"target": "notifier", "deliveries_per_s": 75.0, "lost": 0},
    ]
    table = harness.table("fanout", results, ["nchan-1w", "notifier"])
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert re.search(r"\b150 \(100-200\)", rows["nchan-1w"]) and rows["nchan-1w"].endswith("1.00×")
    assert rows["notifier"].endswith("0.50×")


def test_without_figures_for_the_first_target_there_is_no_ratio():
    table = harness.table("fanout", [{"target": "notifier", "deliveries_per_s": 75.0}], ["nchan-1w", "notifier"])
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert rows["notifier"].endswith("-") and "×" not in rows["notifier"]
