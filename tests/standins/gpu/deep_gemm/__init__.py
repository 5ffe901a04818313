"""GPU-tier stand-in for DeepGEMM (it ships inside the sgl_kernel wheel, which can't load here).

SGLang 0.5.8's NSA replay calls `deep_gemm.get_paged_mqa_logits_metadata(seqlens, 64, num_sms)`
(from 0.5.13 with 2-D context lengths, read here flattened) and stores the result in the metadata.
The stand-in's schedule is a deterministic function of the seqlens it receives (so parity also
checks what SGLang passes to DeepGEMM), and the call is shaped like the real one: a fresh [num_sms
+ 1, 2] int32 tensor and ONE kernel launch on the current stream, no host sync. The kernel is
plain CUDA C (schedule.cu beside this file), built by nvcc into a small shared library on first
import (a few seconds, cached by source hash under the temp directory) and called through ctypes,
so its host cost is a launch, not a Triton dispatch. Per SM s: the first 64-token block it starts
at, as (request index, block within it). Run with SGLANG_ENABLE_JIT_DEEPGEMM=0 so SGLang's GEMM
wrapper does not import the rest.
"""
import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("schedule.cu")


def _library() -> ctypes.CDLL:
    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    # its own place, not the operator's kernel cache: a test may run a process with an empty
    # NSA_FASTPATH_BUILD_DIR and no nvcc, and the stand-in is not ours to rebuild there
    root = Path(tempfile.gettempdir())
    lib = root / "deep_gemm_standin" / f"schedule_{digest}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["nvcc", "-O2", "-shared", "-Xcompiler", "-fPIC", "-o", str(tmp),
                        str(_SOURCE)], check=True)
        os.replace(tmp, lib)
    dll = ctypes.CDLL(str(lib))
    dll.paged_mqa_schedule.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    dll.paged_mqa_schedule.restype = ctypes.c_int
    return dll


_launch = _library().paged_mqa_schedule
_num_sms = None


def get_num_sms() -> int:
    global _num_sms
    if _num_sms is None:
        _num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    return _num_sms


def get_paged_mqa_logits_metadata(seqlens: torch.Tensor, block_kv: int, num_sms: int):
    # 1-D per token (to SGLang 0.5.11), or 2-D context lengths: (N, 1) from 0.5.12, and from
    # 0.5.13 [bs, next_n] for target_verify on SM100; N * next_n query tokens, in order
    assert seqlens.dtype == torch.int32 and seqlens.dim() in (1, 2) and seqlens.is_contiguous(), \
        seqlens
    out = torch.empty((num_sms + 1, 2), dtype=torch.int32, device=seqlens.device)
    err = _launch(seqlens.data_ptr(), seqlens.numel(), block_kv, num_sms, out.data_ptr(),
                  torch._C._cuda_getCurrentRawStream(seqlens.device.index))
    if err:
        raise RuntimeError(f"deep_gemm stand-in: launch failed with CUDA error {err}")
    return out
