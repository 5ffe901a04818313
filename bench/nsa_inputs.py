"""Model-runner stub and replay values for the NSA benchmarks (bench/, tests/harness/first_replay.py).

The benchmarks build every replay argument with SGLang's own buffer classes and dtypes (see
bench_replay_metadata.runner_inputs); this module only supplies the model-runner attributes
NativeSparseAttnBackend.__init__ reads and random request values (lengths, pool indices, accept
lengths) padded as the runners pad. The parity tests drive SGLang's runners themselves
(tests/harness/sglang_runners.py).
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

NUM_DRAFT_TOKENS = 4  # MTP with 3 steps, topk 1
CONTEXT_LEN = 4352
REQ_POOL_SIZE = 300


def make_model_runner(device: str, page_size: int, topk: int, seed: int, decode_impl="flashmla_sparse"):
    """Just the attributes NativeSparseAttnBackend.__init__ reads (SGLang 0.5.8)."""
    gen = torch.Generator().manual_seed(seed)
    # req_to_token rows as a real allocator fills them: whole pages, page ids random.
    pages_per_row = CONTEXT_LEN // page_size
    page_ids = torch.randperm(REQ_POOL_SIZE * pages_per_row * 2, generator=gen)
    page_ids = page_ids[: REQ_POOL_SIZE * pages_per_row].view(REQ_POOL_SIZE, pages_per_row, 1)
    req_to_token = (page_ids * page_size + torch.arange(page_size)).view(REQ_POOL_SIZE, -1)
    req_to_token = req_to_token.to(torch.int32).to(device)

    hf_config = SimpleNamespace(architectures=["DeepseekV32ForCausalLM"], index_topk=topk)
    return SimpleNamespace(
        device=device,
        page_size=page_size,
        server_args=SimpleNamespace(
            enable_deterministic_inference=False,
            nsa_prefill_backend="flashmla_sparse",
            nsa_decode_backend=decode_impl,
            # from 0.5.13 (DSA names)
            dsa_prefill_backend="flashmla_sparse",
            dsa_decode_backend=decode_impl,
            dsa_topk_backend="sgl-kernel",
            speculative_eagle_topk=1,
            speculative_num_draft_tokens=NUM_DRAFT_TOKENS,
        ),
        model_config=SimpleNamespace(  # MLA dims: 0.5.9's __init__ reads them too
            hf_config=hf_config, context_len=CONTEXT_LEN, num_attention_heads=128,
            qk_nope_head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64,
        ),
        kv_cache_dtype=torch.bfloat16,
        token_to_kv_pool=SimpleNamespace(nsa_kv_cache_store_fp8=False,
                                         dsa_kv_cache_store_fp8=False, kv_cache_dim=656),
        req_to_token_pool=SimpleNamespace(req_to_token=req_to_token, size=REQ_POOL_SIZE),
        hisparse_coordinator=None,  # read from 0.5.13
    )


def prepare_sglang_globals(device: str) -> None:
    """Process-wide state SGLang's server sets up before building attention backends."""
    from sglang.srt.layers import dp_attention

    dp_attention._ATTN_TP_SIZE = 1  # what initialize_dp_attention sets without DP attention
    from sglang.srt.distributed import parallel_state

    for name in ("_ATTN_TP", "_ATTN_CP"):  # 0.5.9 on asks the attention TP (and CP) group
        if getattr(parallel_state, name, "absent") is None:
            setattr(parallel_state, name, SimpleNamespace(world_size=1, rank_in_group=0))
    if device == "cpu":
        # __init__ reads the device capability; a CPU-only torch raises there. Report Hopper,
        # the hardware these paths target (only >= 10 changes __init__: a workspace buffer).
        torch.cuda.get_device_capability = lambda *a, **k: (9, 0)


@dataclasses.dataclass
class ReplayInputs:
    bs: int  # captured (padded) batch size passed to replay
    raw_bs: int
    req_pool_indices: torch.Tensor
    seq_lens: torch.Tensor
    seq_lens_cpu: torch.Tensor
    accept_length: torch.Tensor
    extend_seq_lens_cpu: list


def make_replay_inputs(gen, mode: str, bs: int, raw_bs: int, topk: int, fill: int, device: str):
    """Padded the way SGLang 0.5.8's CUDA-graph runners pad a raw batch up to a captured bs."""
    lo = NUM_DRAFT_TOKENS if mode == "draft_extend" else 1
    hi = min(3 * topk, CONTEXT_LEN - NUM_DRAFT_TOKENS)
    # Mix short, around-topk and long sequences.
    choices = torch.stack(
        [
            torch.randint(lo, lo + 8, (raw_bs,), generator=gen),
            torch.randint(max(lo, topk - 8), topk + 8, (raw_bs,), generator=gen),
            torch.randint(lo, hi + 1, (raw_bs,), generator=gen),
        ]
    )
    pick = torch.randint(0, 3, (raw_bs,), generator=gen)
    seq = choices.gather(0, pick.view(1, -1)).view(-1).clamp(lo, hi)
    seq_lens = torch.full((bs,), fill, dtype=torch.int64)
    seq_lens[:raw_bs] = seq
    # Padded slots keep whatever request index the runner's buffer held before: any valid one.
    req_pool_indices = torch.randint(0, REQ_POOL_SIZE, (bs,), generator=gen)
    req_pool_indices[:raw_bs] = torch.randperm(REQ_POOL_SIZE, generator=gen)[:raw_bs]
    accept = torch.full((bs,), NUM_DRAFT_TOKENS, dtype=torch.int32)  # runner's padding value
    accept[:raw_bs] = torch.randint(1, NUM_DRAFT_TOKENS + 1, (raw_bs,), generator=gen, dtype=torch.int32)
    return ReplayInputs(
        bs=bs,
        raw_bs=raw_bs,
        req_pool_indices=req_pool_indices.to(device),
        seq_lens=seq_lens.to(device),
        seq_lens_cpu=seq_lens.clone(),
        accept_length=accept.to(device),
        extend_seq_lens_cpu=accept.tolist(),
    )


def forward_mode_of(mode: str, draft_extend_v2: bool = False):
    """draft_extend_v2: DRAFT_EXTEND_V2, what the overlap worker replays (only it from 0.5.13)."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return {
        "decode": ForwardMode.DECODE,
        "target_verify": ForwardMode.TARGET_VERIFY,
        "draft_extend": ForwardMode.DRAFT_EXTEND_V2 if draft_extend_v2 else ForwardMode.DRAFT_EXTEND,
    }[mode]


def spec_info_for(inputs: ReplayInputs):
    """The accept counts under each release's name (accept_length; num_accepted_tokens in
    0.5.11; num_accept_tokens from 0.5.12)."""
    return SimpleNamespace(
        accept_length=inputs.accept_length,
        num_accepted_tokens=inputs.accept_length,
        num_accept_tokens=inputs.accept_length,
        extend_seq_lens_cpu=list(inputs.extend_seq_lens_cpu),
    )
