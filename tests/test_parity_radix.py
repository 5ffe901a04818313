"""Pristine SGLang 0.5.8 vs the patched tree: RadixCache results, tree shape and evictions."""
import pytest
from harness.parity import compare, run_suite
from parity_configs import FLAGS_OFF, RADIX

_expected: dict = {}


@pytest.mark.parametrize("env", [{}, FLAGS_OFF], ids=["flags-default", "flags-off"])
def test_radix_cache_parity(pristine_template, patched_template, env):
    if "e" not in _expected:
        _expected["e"] = run_suite(pristine_template, "radix", RADIX)
    expected = _expected["e"]
    logs = [v for k, v in expected.items() if k.endswith("/log")]
    assert len(logs) == len(RADIX)
    assert all(any(e[0] == "evict" for e in log) for log in logs), "workload never evicted"
    assert all(sum(e[2] > 0 for e in log if e[0] == "match") > 50 for log in logs), "few hits"
    problems = compare(expected, run_suite(patched_template, "radix", RADIX, env=env))
    assert not problems, "patched RadixCache differs from SGLang 0.5.8:\n" + "\n".join(problems)
