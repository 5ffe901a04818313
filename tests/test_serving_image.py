"""docs/SERVING.md's serving image, built as the doc writes it, without Docker.

The Dockerfile is read from the doc (its one `dockerfile` block), so the doc and this test
cannot drift: each stage's ENV, WORKDIR, COPY and RUN are carried out on this machine, every
RUN as written but for the two that install the system (apt-get) and SGLang (the venv and pip),
which this test stands in for: a venv at the doc's path with this session's pinned SGLang wheel
(and this run's torch, Triton and tvm-ffi). The build stage runs in this environment (nvcc, a C++
compiler, no GPU); serve-base and the serving stage run where nvcc can't be found (no nvcc on
PATH, no toolkit: test_cuda_build.without_nvcc) and with TORCH_CUDA_ARCH_LIST=9.0a set, as CUDA
images often set it. Paths under /opt are the image's: serve-base's, which no later stage
changes, are shared; each stage's NSA_FASTPATH_BUILD_DIR is its own, so the serving stage sees
the build only through its COPY --from=build.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RELEASE, ROOT
from test_cuda_build import WRAPPER, this_machine, without_nvcc
from test_docs import code_blocks
from test_status import install_patched, make_venv

DOC = ROOT / "docs" / "SERVING.md"
SYSTEM = re.compile(r"^apt-get update && apt-get install ")  # the image's system packages
SGLANG = re.compile(r"^python3 -m venv (\S+) && \S+/pip install .*\"sglang==([\w.]+)\"$")


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the doc's Dockerfile, continuation lines joined."""
    (body,) = [body for tag, body in code_blocks(DOC.read_text()) if tag == "dockerfile"]
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction, args.strip()))
    return out


class Image:
    """The stages of the Dockerfile on this machine (see the module docstring)."""

    def __init__(self, root: Path, pristine: Path, envs: dict):
        self.root, self.pristine, self.envs = root, pristine, envs
        self.stage = self.parent = None
        self.env: dict[str, dict] = {}  # per stage: its ENV
        self.workdir: dict[str, str] = {}
        self.outputs: dict[str, list[str]] = {}  # per stage: the output of each RUN

    def path(self, image_path: str, stage: str | None = None) -> Path:
        stage = stage or self.stage
        build = self.env[stage].get("NSA_FASTPATH_BUILD_DIR")
        if build and (image_path == build or image_path.startswith(build + "/")):
            return self.root / stage / image_path.lstrip("/")
        return self.root / "base" / image_path.lstrip("/")

    def map(self, text: str, stage: str | None = None) -> str:
        return re.sub(r"/opt/[\w./-]*", lambda m: str(self.path(m[0], stage)), text)

    def FROM(self, args):
        base, _, name = args.partition(" AS ")
        self.parent = base if base in self.env else None
        self.stage = name.strip()
        self.env[self.stage] = dict(self.env.get(base, {}))
        self.workdir[self.stage] = self.workdir.get(base, "/")
        self.outputs[self.stage] = []

    def ENV(self, args):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            self.env[self.stage][key] = value

    def WORKDIR(self, args):
        self.workdir[self.stage] = args
        self.path(args).mkdir(parents=True, exist_ok=True)

    def COPY(self, args):
        words = args.split()
        source_stage = words.pop(0).removeprefix("--from=") if words[0].startswith("--from=") else None
        src, dest = words
        if source_stage:
            origin = self.path(src, source_stage)
        else:
            origin = ROOT / src
        target = self.path(dest if dest.startswith("/") else f"{self.workdir[self.stage]}/{dest}")
        assert origin.is_dir(), origin
        shutil.copytree(origin, target, symlinks=True)

    def RUN(self, args):
        if SYSTEM.match(args):
            return  # this machine stands in for the system packages
        sglang = SGLANG.match(args)
        if sglang:
            venv, release = self.path(sglang[1]), sglang[2]
            if release != RELEASE:
                pytest.skip(f"the recipe pins SGLang {release}; this session tests {RELEASE}")
            install_patched(make_venv(venv, with_torch=True), self.pristine)  # pristine: not patched yet
            return
        env = {**self.envs[self.stage], **{k: self.map(v) for k, v in self.env[self.stage].items()}}
        p = subprocess.run(["bash", "-c", self.map(args)], cwd=self.path(self.workdir[self.stage]),
                           env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{self.stage}: RUN {args}\n{p.stdout}\n{p.stderr}"
        self.outputs[self.stage].append(p.stdout + p.stderr)

    def ENTRYPOINT(self, args):
        pass  # the server: the GPU tier serves from such a build (test_cuda_build)


@pytest.fixture(scope="module")
def image(pristine_template, tmp_path_factory):
    if WRAPPER.cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc) for the build stage")
    root = tmp_path_factory.mktemp("image")
    runtime = without_nvcc(root, TORCH_CUDA_ARCH_LIST="9.0a")
    build = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    img = Image(root, pristine_template, {"serve-base": runtime, "build": build, "serve": runtime})
    for instruction, args in dockerfile():
        getattr(img, instruction)(args)
    return img


def test_the_recipe_has_three_stages_and_no_nvcc_where_it_serves():
    stages = [args.partition(" AS ")[2] for instruction, args in dockerfile() if instruction == "FROM"]
    assert stages == ["serve-base", "build", "serve"], stages
    froms = [args for instruction, args in dockerfile() if instruction == "FROM"]
    assert froms[1].startswith("serve-base ") and froms[2].startswith("serve-base "), froms
    assert "runtime" in froms[0], "serve-base must be an image without the CUDA toolkit"
    envs = " ".join(args for instruction, args in dockerfile() if instruction == "ENV")
    assert "NSA_FASTPATH_BUILD_DIR=/opt/" in envs, "the build directory must be inside the image"


def test_the_build_stage_prebuilds_for_hopper_and_blackwell(image):
    kernel, radix = image.outputs["build"]
    assert "CUDA metadata kernel ready for sm_90a, sm_100a" in kernel, kernel
    assert list(image.path("/opt/nsa-fastpath/build", "build").glob(
        "nsa_fastpath_metadata_sm90a_sm100a_*/nsa_fastpath_metadata.so"))
    build = image.path("/opt/nsa-fastpath/build", "build")
    assert "nsa-fastpath: radix prefix-match helper built in" in radix, radix
    assert f"compiled (C++ helper loaded from {build}/radix_match/" in radix, radix


def test_the_serving_stage_finds_both_builds_without_nvcc(image):
    (status,) = image.outputs["serve"]
    build = image.path("/opt/nsa-fastpath/build", "serve")
    (kernel,) = build.glob("nsa_fastpath_metadata_sm90a_sm100a_*/nsa_fastpath_metadata.so")
    assert (f"CUDA metadata kernel: built for sm_90a, sm_100a: {kernel}; {this_machine()}\n"
            in status), status
    assert f"radix prefix matching: compiled (C++ helper built: {build}/radix_match/" in status, status
    assert "overall: patched" in status, status


def test_the_prebuild_without_an_arch_list_says_what_to_set(image):
    """The build stage's prebuild command as an operator might type it in an image build,
    without TORCH_CUDA_ARCH_LIST: it stops, builds nothing and names the variable and values."""
    (prebuild,) = [args for instruction, args in dockerfile()
                   if instruction == "RUN" and "cuda_metadata_wrapper --build" in args]
    command = re.sub(r'^TORCH_CUDA_ARCH_LIST="[^"]*" ', "", prebuild)
    assert command != prebuild and "TORCH_CUDA_ARCH_LIST" not in command
    env = {**image.envs["build"], **{k: image.map(v, "build") for k, v in image.env["build"].items()},
           "NSA_FASTPATH_BUILD_DIR": str(image.root / "unused")}
    p = subprocess.run(["bash", "-c", image.map(command, "build")], env=env, capture_output=True,
                       text=True, cwd=image.path(image.workdir["build"], "build"), timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert ('NOT built: no CUDA device here and no TORCH_CUDA_ARCH_LIST: set TORCH_CUDA_ARCH_LIST '
            'to the GPUs it will serve, e.g. TORCH_CUDA_ARCH_LIST="9.0a;10.0a"') in p.stdout, p.stdout
    assert not (image.root / "unused").exists()
