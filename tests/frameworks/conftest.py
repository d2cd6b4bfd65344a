"""pytest wiring of the framework suite: fixtures for the glue module and the torch fixture set, and the
per-framework matrix (fixture cases matched / refused as unsupported / failed).

Run through scripts/test-frameworks.sh, which generates the glue and picks the framework's venv.
"""
from __future__ import annotations

import json
import os

import pytest

import _support

# nodeid -> outcome of the fixture-parity tests ("matched", "refused", "failed")
_CASE_OUTCOMES: dict = {}
_OTHER = {"passed": 0, "failed": 0, "skipped": 0}
_REFUSED_FEATURE: dict = {}  # nodeid -> the feature a refused case was refused for
PARITY_TEST_FILE = "test_fixture_parity.py"


def pytest_configure(config):
    config.addinivalue_line("markers", "only_framework(key): run only when MHA_FRAMEWORK is `key`")


def pytest_collection_modifyitems(config, items):
    """Deselects (not skips) tests meant for another framework."""
    key = os.environ.get("MHA_FRAMEWORK")
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("only_framework")
        (drop if marker is not None and marker.args[0] != key else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    return [
        f"mha framework: {os.environ.get('MHA_FRAMEWORK', '(MHA_FRAMEWORK unset)')}",
        f"mha glue dir: {os.environ.get('MHA_GLUE_DIR', '(MHA_GLUE_DIR unset)')}",
        f"mha fixtures: {_support.fixtures_dir()}",
    ]


@pytest.fixture(scope="session")
def glue():
    """(mha_glue package, the framework's glue module)."""
    return _support.glue_module()


@pytest.fixture(scope="session")
def glue_module(glue):
    return glue[1]


@pytest.fixture(scope="session")
def fixture_index():
    return _support.load_index(_support.fixtures_dir())


def pytest_generate_tests(metafunc):
    """`fixture_case` parametrises a test over every case of the torch fixture set."""
    if "fixture_case" in metafunc.fixturenames:
        index = _support.load_index(_support.fixtures_dir())
        metafunc.parametrize("fixture_case", index["cases"], ids=[c["name"] for c in index["cases"]])


@pytest.fixture
def case_tensors(fixture_case):
    return _support.load_tensors(_support.fixtures_dir() / fixture_case["file"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    is_case = item.nodeid.split("::")[0].endswith(PARITY_TEST_FILE) and "fixture_case" in item.fixturenames
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if is_case:
            if report.passed:
                props = dict(report.user_properties)
                refused = props.get("mha_outcome") == "refused"
                _CASE_OUTCOMES[item.nodeid] = "refused" if refused else "matched"
                if refused:
                    _REFUSED_FEATURE[item.nodeid] = props.get("mha_refused_feature")
            elif report.skipped:
                _CASE_OUTCOMES[item.nodeid] = "failed"  # a fixture case may not be skipped
            else:
                _CASE_OUTCOMES[item.nodeid] = "failed"
        else:
            key = "passed" if report.passed else "skipped" if report.skipped else "failed"
            _OTHER[key] += 1
    elif report.when == "teardown" and report.failed:
        if is_case:
            _CASE_OUTCOMES[item.nodeid] = "failed"
        else:
            _OTHER["failed"] += 1


def _matrix():
    counts = {"matched": 0, "refused": 0, "failed": 0}
    for outcome in _CASE_OUTCOMES.values():
        counts[outcome] += 1
    return {
        "framework": os.environ.get("MHA_FRAMEWORK"),
        "cases": len(_CASE_OUTCOMES),
        **counts,
        "other_tests": dict(_OTHER),
        "case_outcomes": {_case_name(nid): o for nid, o in sorted(_CASE_OUTCOMES.items())},
        "refused_features": {_case_name(nid): f for nid, f in sorted(_REFUSED_FEATURE.items())},
    }


def _case_name(nodeid):
    return nodeid.split("[", 1)[-1].rstrip("]")


def pytest_terminal_summary(terminalreporter):
    m = _matrix()
    terminalreporter.section(f"mha matrix: {m['framework']}")
    terminalreporter.line(
        f"fixture cases {m['cases']}: matched {m['matched']}, refused as unsupported {m['refused']}, "
        f"failed {m['failed']}; other tests: passed {m['other_tests']['passed']}, "
        f"failed {m['other_tests']['failed']}, skipped {m['other_tests']['skipped']}"
    )
    for name, outcome in m["case_outcomes"].items():
        if outcome != "matched":
            why = f" ({m['refused_features'][name]})" if name in m["refused_features"] else ""
            terminalreporter.line(f"  {outcome:8} {name}{why}")


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("MHA_MATRIX_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(_matrix(), f, indent=1)
