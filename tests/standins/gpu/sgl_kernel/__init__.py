"""GPU-tier stand-in for sgl_kernel (its 535 MB wheel is built for torch 2.9.1, not ours).

On CUDA, SGLang 0.5.8 imports many more sgl_kernel names at module level and registers fake
kernels for `sgl_kernel::` torch ops, so this stand-in resolves ANY attribute and ANY submodule
to a callable that raises when called, and defines those ops with a catch-all schema. The NSA
replay metadata paths and RadixCache never call sgl_kernel; a call means the harness left them.
One exception: `fast_topk`, which EAGLEDraftExtendCudaGraphRunner's captured forward applies to
the (stub) model's output, is SGLang's own torch fallback (sglang/srt/utils/common.py): it touches
no metadata.
"""
import importlib.abc
import importlib.machinery
import sys
import types

import torch
from standin_util import raising

# Every op SGLang 0.5.8 passes to torch.library.register_fake unconditionally.
_FAKE_REGISTERED_OPS = [
    "biased_grouped_topk_cpu", "fp8_scaled_mm", "fp8_scaled_mm_cpu", "grouped_topk_cpu",
    "int8_scaled_mm_cpu", "int8_scaled_mm_with_quant", "moe_fused_gate",
    "per_token_quant_int8_cpu", "qkv_proj_with_rope", "qkv_proj_with_rope_fused_weight",
    "rotary_embedding_cpu", "sgl_per_token_group_quant_8bit", "sgl_per_token_group_quant_fp8",
    "sgl_per_token_quant_fp8", "shm_allgather", "silu_and_mul_cpu", "topk_sigmoid_cpu",
    "topk_softmax_cpu", "weight_packed_linear", "shm_allreduce", "bmm_cpu",
    "fused_add_rmsnorm_cpu", "decode_attention_cpu", "extend_attention_cpu", "rmsnorm_cpu",
    "l2norm_cpu", "fused_experts_cpu", "shared_expert_cpu",
]
_lib = torch.library.Library("sgl_kernel", "DEF")
for _op in _FAKE_REGISTERED_OPS:
    _lib.define(f"{_op}(Tensor[] args) -> Tensor[]")


class _Anything:
    """Any name: raises when called; its attributes are _Anything too (e.g. `scalar_types.uint4b8`
    that SGLang reads at import time)."""

    def __init__(self, qualname):
        self._qualname = qualname
        self._call = raising(qualname)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self._qualname}.{name}")

    def __repr__(self):
        return f"<stand-in {self._qualname}>"


class _AnyNameModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Anything(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates any `sgl_kernel.x.y` submodule on import, as an _AnyNameModule package."""

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("sgl_kernel."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _AnyNameModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def fast_topk(values, topk, dim):
    """sglang.srt.utils.common.fast_topk, SGLang's fallback for this kernel."""
    if topk == 1:
        return torch.max(values, dim=dim, keepdim=True)
    return torch.topk(values, topk, dim=dim)


sys.meta_path.insert(0, _SubmoduleFinder())
sys.modules[__name__].__class__ = _AnyNameModule
