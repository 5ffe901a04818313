"""GPU-tier stand-in for sgl_kernel (its 535 MB wheel is built for torch 2.9.1, not ours).

On CUDA, SGLang 0.5.8 imports many more sgl_kernel names at module level and registers fake
kernels for `sgl_kernel::` torch ops, so this stand-in resolves ANY attribute and ANY submodule
to a callable that raises when called, and defines those ops with a catch-all schema. The NSA
replay metadata paths and RadixCache never call sgl_kernel; a call means the harness left them.
One exception: `fast_topk`, which EAGLEDraftExtendCudaGraphRunner's captured forward applies to
the (stub) model's output, is SGLang's own torch fallback (sglang/srt/utils/common.py): it touches
no metadata.
"""

import torch
from standin_util import any_name_package

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


def fast_topk(values, topk, dim):
    """sglang.srt.utils.common.fast_topk, SGLang's fallback for this kernel."""
    if topk == 1:
        return torch.max(values, dim=dim, keepdim=True)
    return torch.topk(values, topk, dim=dim)


any_name_package(__name__)
