"""Pristine SGLang vs the patched tree: RadixCache results, tree shape and evictions.

Three suites (tests/harness/radix_scenarios.py, configs in parity_configs.py: smaller workloads
on releases other than 0.5.8), each run once on pristine SGLang and once per matcher on the
patched tree (one process per tree for all of them), compared exactly:
- ``workload`` (RADIX): 1000 requests a config, page 1/16/64, EAGLE keys on/off,
  extra keys, locks, inserts, LRU evictions under a budget;
- ``scheduler`` (SCHEDULER): SGLang's own Req.init_next_round_input,
  SchedulePolicy("lpm").calc_priority, cache_unfinished_req and cache_finished_req make the
  calls; waiting requests are matched again each round with a new list of their same ints
  (the re-match cache's case), thousands of matches a config;
- ``rematch`` (REMATCH): waiting requests matched again and again while inserts split their
  paths, evictions remove them, locks, resets and growing requests change the tree under them.

Matchers: ``compiled`` (the default: C++ helper, re-match cache), ``python`` (the pure-Python
fallback, SGLANG_RADIX_COMPILED_MATCH=0), and every flag off (SGLang's own code). Each run must
also have been served by the matcher it names (the runner records radix_match.stats), so a
silent fallback cannot pass for the fast path. The re-match cache serves the compiled matcher's
re-matches of list ids, the pure-Python matcher's of ``array('q')`` ids (0.5.13 on; the compiled
walk does not consult it there: radix_match.NSA_REMATCH_MIN_ARRAY).
"""
import pytest
from conftest import RELEASE
from harness import releases
from harness.parity import compare, labelled, run_suite
from harness.radix_build import helper_build_env
from parity_configs import FLAGS_OFF, radix_cpu

SUITES, LEAST = radix_cpu(RELEASE)  # smaller workloads on releases other than the base one
ARRAY_IDS = releases.array_ids(RELEASE)
REMATCHING = "python" if ARRAY_IDS else "compiled"  # the matcher the re-match cache serves
MATCHERS = {
    "compiled": {},
    "python": {"SGLANG_RADIX_COMPILED_MATCH": "0"},
    "flags-off": FLAGS_OFF,
}

_expected: dict = {}
_runs: dict = {}


def _suite_runs(pristine, patched, tmp_path_factory, suite: str) -> tuple[dict, dict]:
    """(pristine, {matcher: patched}) outputs of `suite`. Two processes for the whole module:
    every suite on the pristine tree, and every suite under every matcher's flags on the patched
    one (per-scenario env: RadixCache reads its flags at construction, and each scenario builds
    its own), labelled so each test compares its own slice."""
    if not _runs:
        _runs["pristine"] = run_suite(pristine, "radix", [
            dict(c, label=s) for s in SUITES for c in SUITES[s]])
        _runs["patched"] = run_suite(patched, "radix", [
            dict(c, label=f"{s}:{m}", env=env) for m, env in MATCHERS.items()
            for s in SUITES for c in SUITES[s]], env=helper_build_env(tmp_path_factory))
    return (labelled(_runs["pristine"], suite),
            {m: labelled(_runs["patched"], f"{suite}:{m}") for m in MATCHERS})


def _served(result: dict) -> dict:
    """Total matches served per matcher over the suite (radix_match.stats per config)."""
    total: dict = {}
    for key, stats in result.items():
        if key.startswith("_meta/") and key.endswith("/stats"):
            for name, count in stats.items():
                total[name] = total.get(name, 0) + count
    return total


@pytest.mark.parametrize("matcher", list(MATCHERS))
@pytest.mark.parametrize("suite", list(SUITES))
def test_radix_cache_parity(pristine_template, patched_template, tmp_path_factory, suite,
                            matcher):
    expected, patched = _suite_runs(pristine_template, patched_template, tmp_path_factory, suite)
    hits, least_served, least_rematch = LEAST[suite]
    logs = [v for k, v in expected.items() if k.endswith("/log")]
    assert len(logs) == len(SUITES[suite])
    assert all(any(e[0] == "evict" for e in log) for log in logs), "workload never evicted"
    if suite == "scheduler":
        assert all(sum(e[0] == "mp" and e[6] > 0 for e in log) > hits for log in logs), "few hits"
    else:
        assert all(sum(e[2] > 0 for e in log if e[0] == "match") > hits for log in logs), \
            "few hits"
    actual = patched[matcher]
    problems = compare(expected, actual)
    assert not problems, (f"patched RadixCache ({matcher}) differs from SGLang {RELEASE}:\n"
                          + "\n".join(problems))

    served = _served(actual)
    if matcher == "flags-off":
        assert not served, f"a fast path ran with every flag off: {served}"
        return
    assert served.get(matcher, 0) > least_served, served
    other = "python" if matcher == "compiled" else "compiled"
    assert served.get(other, 0) == 0, served
    assert served.get("upstream", 0) == 0, served  # every query took the fast walk
    if suite != "workload" and matcher == REMATCHING:  # rematch: its tree keeps changing
        assert served.get("rematch", 0) > least_rematch, f"too few re-match hits: {served}"
    if ARRAY_IDS and matcher == "compiled":  # it does not consult the cache there
        assert served.get("rematch", 0) == 0, served


# A parity suite that passes whether or not the code is right proves nothing: plant one-line bugs
# in the compiled helper (the mutant's source hash differs, so it is built afresh) and check that
# the rematch suite reports them.
SMALL = [{"scenario": "rematch", "page_size": 1, "bigram": True, "n_ops": 500,
          "max_prefix": 6000}]
HELPER = "sglang/srt/mem_cache/radix_match_ext.cpp"
# the EAGLE comparison of the walk this release takes: bigram tuples, or from 0.5.11 RadixKey
# views compared in place (releases.bigram_view_keys)
EAGLE_PAIRS = ("      p = form == kChain ? (j > m ? m : (j ? j - 1 : 0)) : j;  // ints [0, j), "
               "pairs [0, j - 1)\n" if releases.bigram_view_keys(RELEASE) else
               "      p = j < 0 ? j : (j > m ? m : (j ? j - 1 : 0));  // ints [0, j) equal: pairs "
               "[0, j - 1)\n")
HELPER_BUGS = [
    pytest.param(EAGLE_PAIRS, EAGLE_PAIRS.replace("(j ? j - 1 : 0)", "j"),
                 id="eagle-pairs-off-by-one"),
    # the re-match cache's replay (list ids), or the comparison of array('q') ids (0.5.13 on:
    # the compiled walk does not consult the cache there)
    pytest.param("  while (i < count && a[i] == b[i]) ++i;\n  return i;\n",
                 "  while (i < count && a[i] == b[i]) ++i;\n  return i < count ? i + 1 : i;\n",
                 id="array-ids-mismatch-off-by-one") if ARRAY_IDS else
    pytest.param("    if (r == 0) Py_RETURN_NONE;\n    PyObject* key = PyObject_GetAttr(child, s_key);\n",
                 "    (void)r;\n    PyObject* key = PyObject_GetAttr(child, s_key);\n",
                 id="rematch-path-membership-unchecked"),
]


@pytest.mark.parametrize("old,new", HELPER_BUGS)
def test_parity_reports_a_planted_helper_bug(pristine_template, patched_template,
                                              tmp_path_factory, tmp_path, old, new):
    import shutil

    if "small" not in _expected:
        _expected["small"] = run_suite(pristine_template, "radix", SMALL)
    mutant = tmp_path / "site"
    shutil.copytree(patched_template, mutant, symlinks=True)
    src = mutant / HELPER
    text = src.read_text()
    assert text.count(old) == 1, "mutation anchor not unique: update this test"
    src.write_text(text.replace(old, new))
    actual = run_suite(mutant, "radix", SMALL, env=helper_build_env(tmp_path_factory))
    assert _served(actual).get("compiled", 0) > 0
    assert compare(_expected["small"], actual), "a planted bug in the helper went unnoticed"
