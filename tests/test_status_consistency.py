"""`apply.sh status` says one thing: no two lines of one output contradict each other, and what
they say is what a server here would do.

Every flag combination, the kernel built or not, nvcc present or absent, NSA_FASTPATH_CUDA_JIT
unset or 0, and no GPU or a GPU the build has code for, one it has none for, one below sm_80:
scripts/status.py's own report (its child's facts, its lines) run in this process, where the
GPU can be pretended (torch.cuda's two functions the wrapper reads). `contradictions()` checks
each output against the rules below and `oracle()` says independently which path must serve;
the checker is first shown to catch the contradictions status printed before it derived its
lines from one set of facts. The real `apply.sh status` (processes, no GPU) runs those cases
as regression tests.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from test_cuda_build import WRAPPER, WRAPPER_PY, this_machine, without_nvcc

needs_nvcc = pytest.mark.skipif(WRAPPER.cuda_home() is None, reason="no CUDA toolkit (nvcc)")
NSA_FLAGS = ("SGLANG_NSA_USE_CUDA_METADATA", "SGLANG_NSA_USE_TRITON_METADATA",
             "SGLANG_NSA_USE_BATCHED_COPY")
RADIX_FLAGS = ("SGLANG_RADIX_FAST_MATCH", "SGLANG_RADIX_COMPILED_MATCH")
PREBUILD_ARCHS = "9.0a;10.0a"
PREBUILD_GPUS = ((9, 0), (10, 0))


# ------------------------------------------------------------------ the rules
def contradictions(out: str, env: dict) -> list[str]:
    """Every pair of statements in one status output that cannot both be true (`env`: the
    environment status ran in)."""
    lines = [ln.removeprefix("[nsa-fastpath] ").strip() for ln in out.splitlines()]
    text = "\n".join(lines)
    found = []

    def one(prefix: str) -> str:
        hits = [ln[len(prefix):] for ln in lines if ln.startswith(prefix)]
        assert len(hits) == 1, (prefix, out)
        return hits[0]

    nsa, radix = one("NSA replay metadata: ").split()[0], one("radix prefix matching: ").split()[0]
    flags = {m[1]: (m[2] == "True", m[3]) for m in
             re.finditer(r"^(\w+)=(True|False) \(.*?\) -> .*?: (.*)$", text, re.M)}
    # the path named anywhere is the path line's
    for kind, path in (("path", nsa), ("matcher", radix)):
        for other in set(re.findall(rf"the (\w+) {kind} serves", text)) - {path}:
            found.append(f"a line says the {other} {kind} serves, the {kind} line says {path}")
    for name, (value, effect) in flags.items():
        if bool(re.match(r"on\b", effect)) != value:
            found.append(f"{name}={value} but its line says {effect!r}")
        own = "SGLang's own code path" in effect
        if own and name.startswith("SGLANG_NSA_USE_") and nsa != "upstream":
            found.append(f"{name}: {effect!r}, yet the NSA path is {nsa}")
        if own and name.startswith("SGLANG_RADIX_") and radix != "upstream":
            found.append(f"{name}: {effect!r}, yet the radix matcher is {radix}")
    # flag values and paths
    value = {name: v for name, (v, _) in flags.items()}
    if value.get("SGLANG_NSA_USE_CUDA_METADATA") is False and nsa == "cuda":
        found.append("SGLANG_NSA_USE_CUDA_METADATA=False, yet cuda serves")
    if value.get("SGLANG_NSA_USE_TRITON_METADATA") is False and nsa == "triton":
        found.append("SGLANG_NSA_USE_TRITON_METADATA=False, yet triton serves")
    if value.get("SGLANG_RADIX_FAST_MATCH") is False and radix != "upstream":
        found.append(f"SGLANG_RADIX_FAST_MATCH=False, yet the {radix} matcher serves")
    if "triton: not importable" in text and nsa == "triton":
        found.append("Triton is not importable, yet triton serves")
    # NSA_FASTPATH_CUDA_JIT is named as a cause only when it is 0, and then nothing builds
    jit_off = env.get("NSA_FASTPATH_CUDA_JIT") == "0"
    run_time_build = re.search(r"first CUDA-graph capture builds it|builds it at its first", text)
    if "NSA_FASTPATH_CUDA_JIT" in text and not jit_off:
        found.append("NSA_FASTPATH_CUDA_JIT is not 0, yet a line names it")
    if jit_off and run_time_build:
        found.append("NSA_FASTPATH_CUDA_JIT=0, yet a line says a server builds the kernel")
    # the CUDA kernel built or not: one answer (the radix lines speak of the radix helper)
    cuda_lines = [ln for ln in lines if not ln.startswith(("radix prefix matching:", "SGLANG_RADIX_"))]
    built = [ln for ln in cuda_lines if re.search(r"(?<!not )\bbuilt(?: for |: )", ln)]
    not_built = [ln for ln in cuda_lines if re.search(r"\bnot built\b", ln)]
    if built and not_built:
        found.append(f"built ({built[0]!r}) and not built ({not_built[0]!r})")
    libraries = set(re.findall(r"built for sm_[\w, ]+?: (\S+?\.so)", text))
    for loaded in re.findall(r"loads (/\S+?\.so)", text):
        if loaded not in libraries:
            found.append(f"loads {loaded}, which no line says is built")
    # a GPU or none; nvcc or none
    if "no CUDA device" in text and "this GPU (" in text:
        found.append("no CUDA device, and this GPU")
    if "no nvcc" in text and run_time_build:
        found.append("no nvcc, and a build at capture")
    kernel = one("CUDA metadata kernel: ")
    if nsa == "cuda" and not re.search(r"loads |CUDA-graph capture builds it for", kernel):
        found.append(f"cuda serves, yet the kernel line says neither a load nor a build: {kernel!r}")
    if nsa == "cuda" and ("no CUDA device" in kernel or " gets none: " in kernel):
        found.append(f"cuda serves, yet the kernel line says {kernel!r}")
    return found


# Outputs status printed before its lines came from one set of facts, as operators met them:
# the checker must catch each.
OLD_OUTPUTS = {
    "jit unset, named as a cause": ({}, """
[nsa-fastpath] CUDA metadata kernel: not built: not built for sm_90a in /b and NSA_FASTPATH_CUDA_JIT=0: prebuild
[nsa-fastpath]   SGLANG_NSA_USE_CUDA_METADATA=True (default) -> x: on: used on a CUDA GPU (the extension is not built yet: the first CUDA-graph capture builds it, unless NSA_FASTPATH_CUDA_JIT=0)
[nsa-fastpath]   NSA replay metadata: triton 3.5.0 (no CUDA device for the CUDA C++ path)
[nsa-fastpath]   radix prefix matching: compiled (x)
"""),
    "built and not built": ({}, """
[nsa-fastpath] CUDA C++ extension: built: /b/nsa_fastpath_metadata_sm90a/nsa_fastpath_metadata.so, /b/nsa_fastpath_metadata_sm90a_sm100a/nsa_fastpath_metadata.so
[nsa-fastpath]   NSA replay metadata: triton 3.5.0 (no CUDA device for the CUDA C++ path)
[nsa-fastpath]   CUDA metadata kernel: not built: no CUDA device and no TORCH_CUDA_ARCH_LIST: nothing to build for
[nsa-fastpath]   radix prefix matching: compiled (x)
"""),
    "off: SGLang's own path, triton serves": ({"SGLANG_NSA_USE_CUDA_METADATA": "0"}, """
[nsa-fastpath] CUDA metadata kernel: built for sm_90a: /b/x.so; no CUDA device here
[nsa-fastpath]   SGLANG_NSA_USE_CUDA_METADATA=False (set to '0' in the environment) -> NSA replay metadata by the CUDA C++ kernel: off: SGLang's own code path
[nsa-fastpath]   NSA replay metadata: triton 3.5.0 (no CUDA device for the CUDA C++ path)
[nsa-fastpath]   radix prefix matching: compiled (x)
"""),
}


@pytest.mark.parametrize("case", list(OLD_OUTPUTS))
def test_the_checker_catches_each_contradiction_of_the_report(case):
    env, out = OLD_OUTPUTS[case]
    assert contradictions(out, env), out


def oracle(case: dict) -> tuple[str, str]:
    """The NSA path and the radix matcher a server would take in `case`, from the case alone."""
    device, cuda, triton_on = case["device"], case["cuda"], case["triton"]
    fits = case["built"] and device in PREBUILD_GPUS
    buildable = case["jit"] and case["nvcc"]
    cuda_serves = cuda and device is not None and device >= (8, 0) and (fits or buildable)
    nsa = "cuda" if cuda_serves else "triton" if triton_on else "upstream"
    radix = "upstream" if not case["fast"] else "compiled" if case["compiled"] else "python"
    return nsa, radix


# ------------------------------------------------------------------ the prebuild
@pytest.fixture(scope="module")
def prebuild(tmp_path_factory) -> Path:
    """The image recipe's prebuild ("9.0a;10.0a") in a cache of its own."""
    if WRAPPER.cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc)")
    root = tmp_path_factory.mktemp("status-build")
    p = subprocess.run([sys.executable, str(WRAPPER_PY), "--build"], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, NSA_FASTPATH_BUILD_DIR=str(root),
                                                        TORCH_CUDA_ARCH_LIST=PREBUILD_ARCHS))
    assert p.returncode == 0 and "ready for sm_90a, sm_100a" in p.stdout, p.stdout + p.stderr
    return root


# ------------------------------------------------------------------ every case, in this process
def load_status():
    spec = importlib.util.spec_from_file_location("nsa_fastpath_status", ROOT / "scripts/status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [dict(zip(("device", "built", "nvcc", "jit", "cuda", "triton", "copy"), values))
         for values in itertools.product([None, (9, 0), (8, 0), (7, 5)], [True, False],
                                         [True, False], [True, False], [True, False],
                                         [True, False], [True, False])]
for i, case in enumerate(CASES):  # the radix flags take each of their four values in turn
    case["fast"], case["compiled"] = [(True, True), (True, False), (False, True), (False, False)][i % 4]


def case_id(case: dict) -> str:
    device = "no-gpu" if case["device"] is None else f"sm_{case['device'][0]}{case['device'][1]}"
    return "-".join([device] + [f"{k}={int(v)}" for k, v in case.items() if k != "device"])


@needs_nvcc
@pytest.mark.parametrize("device", [None, (9, 0), (8, 0), (7, 5)],
                         ids=["no-gpu", "sm_90", "sm_80", "sm_75"])
def test_no_two_lines_contradict_in_any_case(device, prebuild, nsa_modules, patched_template,
                                             pristine_template, monkeypatch, capsys, tmp_path):
    """status.py's report, with its child's facts found in this process on a pretended GPU, for
    every flag combination x built or not x nvcc or not x NSA_FASTPATH_CUDA_JIT unset or 0."""
    status = load_status()
    monkeypatch.setattr(status, "gather", lambda site, names: (status.probe(names), ""))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device is not None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: device)
    args = SimpleNamespace(environ=str(patched_template / "sglang/srt/environ.py"),
                           pristine_environ=str(pristine_template / "sglang/srt/environ.py"))
    no_nvcc = without_nvcc(tmp_path)
    empty = tmp_path / "empty-cache"
    checked = 0
    for case in (c for c in CASES if c["device"] == device):
        with monkeypatch.context() as m:
            for name in ("TORCH_CUDA_ARCH_LIST", "NSA_FASTPATH_CUDA_JIT"):
                m.delenv(name, raising=False)
            if not case["nvcc"]:
                m.setenv("PATH", no_nvcc["PATH"])
                m.delenv("CUDA_PATH", raising=False)
                m.delenv("CUDA_HOME", raising=False)
                if "CUDA_HOME" in no_nvcc:
                    m.setenv("CUDA_HOME", no_nvcc["CUDA_HOME"])
            m.setenv("NSA_FASTPATH_BUILD_DIR", str(prebuild if case["built"] else empty))
            if not case["jit"]:
                m.setenv("NSA_FASTPATH_CUDA_JIT", "0")
            for name, on in zip(NSA_FLAGS + RADIX_FLAGS, (case["cuda"], case["triton"],
                                                          case["copy"], case["fast"],
                                                          case["compiled"])):
                m.setenv(name, "1" if on else "0")
            assert status.report(args, patched_template) == 0
            out = capsys.readouterr().out
            problems = contradictions(out, dict(os.environ))
        nsa, radix = oracle(case)
        kernel = next(ln for ln in out.splitlines() if "CUDA metadata kernel: " in ln)
        if f"NSA replay metadata: {nsa}" not in out:
            problems.append(f"the NSA path must be {nsa}")
        if f"radix prefix matching: {radix}" not in out:
            problems.append(f"the radix matcher must be {radix}")
        if case["built"] != ("CUDA metadata kernel: built for sm_90a, sm_100a: " in kernel):
            problems.append("the kernel line does not say what is built")
        assert not problems, f"{case_id(case)}:\n" + "\n".join(problems) + "\n" + out
        checked += 1
    assert checked == len(CASES) // 4


# ------------------------------------------------------------------ the report's cases, for real
def apply_status(site: Path, **env) -> str:
    """`apply.sh status --target site` in this environment plus `env` (no GPU here)."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("TORCH_CUDA_ARCH_LIST", "NSA_FASTPATH_CUDA_JIT")}
    p = subprocess.run(["bash", str(ROOT / "scripts/apply.sh"), "status", "--target", str(site)],
                       capture_output=True, text=True, env={**full, "PYTHON": sys.executable, **env})
    assert p.returncode == 0, p.stdout + p.stderr
    problems = contradictions(p.stdout, {**full, **env})
    assert not problems, "\n".join(problems) + "\n" + p.stdout
    return p.stdout


def kernel_line(out: str) -> str:
    (found,) = [ln for ln in out.splitlines() if ln.startswith("[nsa-fastpath] CUDA metadata kernel: ")]
    return found.removeprefix("[nsa-fastpath] CUDA metadata kernel: ")


def test_jit_unset_is_never_named_as_the_cause(patched_template, tmp_path):
    out = apply_status(patched_template, NSA_FASTPATH_BUILD_DIR=str(tmp_path / "empty"),
                       TORCH_CUDA_ARCH_LIST="9.0a")
    assert kernel_line(out).startswith(f"not built in {tmp_path / 'empty'}; "), out
    assert "NSA_FASTPATH_CUDA_JIT" not in out, out
    out = apply_status(patched_template, NSA_FASTPATH_BUILD_DIR=str(tmp_path / "empty"),
                       NSA_FASTPATH_CUDA_JIT="0")
    assert "NSA_FASTPATH_CUDA_JIT=0 forbids" in kernel_line(out), out


@needs_nvcc
def test_a_prebuild_is_built_in_every_line(patched_template, prebuild):
    out = apply_status(patched_template, NSA_FASTPATH_BUILD_DIR=str(prebuild))
    (directory,) = prebuild.glob("nsa_fastpath_metadata_sm90a_sm100a_*")
    assert kernel_line(out) == (f"built for sm_90a, sm_100a: {directory}/nsa_fastpath_metadata.so; "
                                f"{this_machine()}"), out
    assert "TORCH_CUDA_ARCH_LIST" not in out, out  # the run-time list does not decide what loads


def test_the_cuda_flag_off_names_the_path_that_serves(patched_template, tmp_path):
    out = apply_status(patched_template, NSA_FASTPATH_BUILD_DIR=str(tmp_path),
                       SGLANG_NSA_USE_CUDA_METADATA="0")
    (flag,) = [ln for ln in out.splitlines() if "  SGLANG_NSA_USE_CUDA_METADATA=" in ln]
    assert flag.endswith(": off: the triton path serves"), out
    assert "  NSA replay metadata: triton " in out, out
    out = apply_status(patched_template, NSA_FASTPATH_BUILD_DIR=str(tmp_path),
                       SGLANG_NSA_USE_CUDA_METADATA="0", SGLANG_NSA_USE_TRITON_METADATA="0")
    (flag,) = [ln for ln in out.splitlines() if "  SGLANG_NSA_USE_CUDA_METADATA=" in ln]
    assert flag.endswith(": off: SGLang's own code path (the upstream path serves)"), out
    assert "  NSA replay metadata: upstream " in out, out


# ------------------------------------------------------------------ GPU tier
@pytest.mark.gpu
@pytest.mark.parametrize("built", [True, False], ids=["built", "not-built"])
@pytest.mark.parametrize("nvcc", [True, False], ids=["nvcc", "no-nvcc"])
def test_on_a_gpu_status_says_one_thing(patched_template, prebuild, built, nvcc, tmp_path):
    """The real GPU, the real `apply.sh status`: each flag combination of the metadata paths."""
    env = {}
    if not nvcc:  # "" is unset for the wrapper's lookup
        no_nvcc = without_nvcc(tmp_path)
        env = {"PATH": no_nvcc["PATH"], "CUDA_HOME": no_nvcc.get("CUDA_HOME", ""), "CUDA_PATH": ""}
    capability = torch.cuda.get_device_capability()
    for cuda, triton_on in itertools.product(["1", "0"], ["1", "0"]):
        out = apply_status(patched_template, **env,
                           NSA_FASTPATH_BUILD_DIR=str(prebuild if built else tmp_path / "empty"),
                           SGLANG_NSA_USE_CUDA_METADATA=cuda, SGLANG_NSA_USE_TRITON_METADATA=triton_on)
        case = {"device": capability, "built": built, "nvcc": nvcc, "jit": True,
                "cuda": cuda == "1", "triton": triton_on == "1", "fast": True, "compiled": True}
        assert f"NSA replay metadata: {oracle(case)[0]}" in out, out
