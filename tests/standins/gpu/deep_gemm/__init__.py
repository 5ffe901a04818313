"""GPU-tier stand-in for DeepGEMM (it ships inside the sgl_kernel wheel, which can't load here).

SGLang 0.5.8's NSA replay calls `deep_gemm.get_paged_mqa_logits_metadata(seqlens, 64, num_sms)`
and stores the result in the metadata. The stand-in's schedule is a deterministic function of
the seqlens it receives (so parity also checks what SGLang passes to DeepGEMM) and costs about
what the real call does: one kernel launch, no host sync. Shape [num_sms + 1, 2] int32 like the
real one: per SM, the first 64-token block it starts at, as (request index, block within it).
Run with SGLANG_ENABLE_JIT_DEEPGEMM=0 so SGLang's GEMM wrapper does not import the rest.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _schedule_kernel(seqlens_ptr, out_ptr, n, num_sms, BLOCK_KV: tl.constexpr,
                     N_POW2: tl.constexpr, S_POW2: tl.constexpr):
    offs = tl.arange(0, N_POW2)
    lens = tl.load(seqlens_ptr + offs, mask=offs < n, other=0)
    blocks = (tl.maximum(lens, 0) + BLOCK_KV - 1) // BLOCK_KV
    ends = tl.cumsum(blocks, axis=0)  # inclusive
    total = tl.sum(blocks, axis=0)
    s = tl.arange(0, S_POW2)
    target = (total * s) // num_sms  # first block handed to SM s
    # request index = number of requests whose blocks end at or before target
    req = tl.sum((ends[None, :] <= target[:, None]).to(tl.int32) * (offs[None, :] < n), axis=1)
    starts = ends - blocks
    start_of_req = tl.sum(tl.where(offs[None, :] == req[:, None], starts[None, :], 0), axis=1)
    smask = s <= num_sms
    tl.store(out_ptr + s * 2, req.to(tl.int32), mask=smask)
    tl.store(out_ptr + s * 2 + 1, (target - start_of_req).to(tl.int32), mask=smask)


def get_num_sms() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def get_paged_mqa_logits_metadata(seqlens: torch.Tensor, block_kv: int, num_sms: int):
    assert seqlens.dtype == torch.int32 and seqlens.dim() == 1, seqlens
    n = seqlens.numel()
    out = torch.empty((num_sms + 1, 2), dtype=torch.int32, device=seqlens.device)
    _schedule_kernel[(1,)](
        seqlens, out, n, num_sms, BLOCK_KV=block_kv,
        N_POW2=triton.next_power_of_2(max(n, 1)), S_POW2=triton.next_power_of_2(num_sms + 1),
    )
    return out
