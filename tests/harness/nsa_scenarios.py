"""NSA backend scenarios: SGLang's real NativeSparseAttnBackend / MultiStepBackend, driven the way
SGLang 0.5.8's CUDA-graph runners drive them, with every metadata buffer poisoned before each
replay and dumped after it.

Imported only inside a runner process whose sys.path starts with the SGLang tree under test.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

POISON = -777_777  # fits int32; no real length, index or offset ever takes this value
NUM_DRAFT_TOKENS = 4  # MTP with 3 steps, topk 1: what DeepSeek-V3.2 deployments typically use
CONTEXT_LEN = 4352  # > 2 * max topk, so seq lens reach "well above topk" for every topk
REQ_POOL_SIZE = 300


# ---------------------------------------------------------------- model-runner stub
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
            speculative_eagle_topk=1,
            speculative_num_draft_tokens=NUM_DRAFT_TOKENS,
        ),
        model_config=SimpleNamespace(
            hf_config=hf_config, context_len=CONTEXT_LEN, num_attention_heads=128
        ),
        token_to_kv_pool=SimpleNamespace(nsa_kv_cache_store_fp8=False, kv_cache_dim=656),
        req_to_token_pool=SimpleNamespace(req_to_token=req_to_token, size=REQ_POOL_SIZE),
    )


def prepare_sglang_globals(device: str) -> None:
    """Process-wide state SGLang's server sets up before building attention backends."""
    from sglang.srt.layers import dp_attention

    dp_attention._ATTN_TP_SIZE = 1  # what initialize_dp_attention sets without DP attention
    if device == "cpu":
        # __init__ reads the device capability; a CPU-only torch raises there. Report Hopper,
        # the hardware these paths target (only >= 10 changes __init__: a workspace buffer).
        torch.cuda.get_device_capability = lambda *a, **k: (9, 0)


# ---------------------------------------------------------------- dump / poison helpers
def metadata_tensors(metadata) -> dict[str, torch.Tensor]:
    out = {}
    for field in dataclasses.fields(metadata):
        value = getattr(metadata, field.name)
        if isinstance(value, torch.Tensor):
            out[field.name] = value
        elif value is not None and dataclasses.is_dataclass(value):  # NSAFlashMLAMetadata
            for sub in dataclasses.fields(value):
                out[f"{field.name}.{sub.name}"] = getattr(value, sub.name)
    return out


def metadata_scalars(metadata) -> dict[str, object]:
    return {
        f.name: getattr(metadata, f.name)
        for f in dataclasses.fields(metadata)
        if isinstance(getattr(metadata, f.name), (int, list, type(None)))
    }


# Arange constants a replay never rewrites (SGLang: "cu_seqlens_q is always arange, no need to
# copy"); nsa_cu_seqlens_q aliases the backend's shared arange buffer, so poisoning it would corrupt
# state outside the replay contract. They are still dumped, so any write to them shows up.
REPLAY_CONSTANTS = ("cu_seqlens_q", "nsa_cu_seqlens_q")


def poison(backend, bs: int) -> None:
    """Poison every buffer a replay may write: the whole capture-time metadata and graph state."""
    state = backend.decode_cuda_graph_metadata
    for name in ("cache_seqlens", "cu_seqlens_k", "page_table"):
        state[name].fill_(POISON)
    for name, t in metadata_tensors(state[bs]).items():
        if name in REPLAY_CONSTANTS:
            continue
        if t.dtype in (torch.int32, torch.int64):
            t.fill_(POISON)
        else:
            t.fill_(float("nan"))


def unread_masks(mode: str, inputs, page_table_1, page_size: int) -> dict[str, torch.Tensor]:
    """Page-table cells SGLang 0.5.8 writes on replay but no reader ever reads.

    0.5.8 copies `req_to_token[req, :max_len]` into every row, max_len being the batch's longest
    kv length; readers (FlashMLA / FA3 / the indexer's topk transform and DeepGEMM's paged MQA
    logits) only look below each row's own kv length (blocks below ceil(kv_len / page_size)).
    The fast paths skip the cells past a row's kv length, so those are exempt from comparison.
    """
    seq = inputs.seq_lens_cpu[: inputs.bs]
    if mode == "decode":
        kv, ext = seq, torch.ones_like(seq)
    elif mode == "target_verify":
        kv, ext = seq + NUM_DRAFT_TOKENS, torch.full_like(seq, NUM_DRAFT_TOKENS)
    else:
        kv, ext = seq, inputs.accept_length.cpu()[: inputs.bs].long()
    rows, cols = page_table_1.shape
    row_kv = torch.repeat_interleave(kv, ext)[:rows]
    row_kv = torch.cat([row_kv, row_kv.new_zeros(rows - row_kv.shape[0])])
    written = (torch.arange(rows) < int(ext.sum()))[:, None]
    masks = {}
    for name, unit, width in (("page_table_1", 1, cols),
                              ("real_page_table", page_size, -(-cols // page_size))):
        idx = torch.arange(width)[None, :]
        max_len = int(kv.max())
        pristine_writes = written & (idx < -(-max_len // unit))
        read = idx < (-(-row_kv // unit))[:, None]
        masks[name] = pristine_writes & ~read
    return masks


def dump(out: dict, prefix: str, backend, bs: int, mode: str = None, inputs=None) -> None:
    metadata = backend.decode_cuda_graph_metadata[bs]
    if inputs is not None:
        for name, mask in unread_masks(mode, inputs, metadata.page_table_1,
                                       backend.real_page_size).items():
            out[f"{prefix}/unread.{name}"] = mask
    out[f"{prefix}/forward_metadata_is_graph_metadata"] = backend.forward_metadata is metadata
    for name, t in metadata_tensors(metadata).items():
        out[f"{prefix}/{name}"] = t.detach().cpu().clone()
    for name, v in metadata_scalars(metadata).items():
        out[f"{prefix}/{name}"] = v
    state = backend.decode_cuda_graph_metadata
    for name in ("cache_seqlens", "cu_seqlens_q", "cu_seqlens_k", "page_table"):
        out[f"{prefix}/graph_state.{name}"] = state[name].detach().cpu().clone()


# ---------------------------------------------------------------- inputs
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


def forward_mode_of(mode: str):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return {
        "decode": ForwardMode.DECODE,
        "target_verify": ForwardMode.TARGET_VERIFY,
        "draft_extend": ForwardMode.DRAFT_EXTEND,
    }[mode]


def spec_info_for(inputs: ReplayInputs):
    return SimpleNamespace(
        accept_length=inputs.accept_length,
        extend_seq_lens_cpu=list(inputs.extend_seq_lens_cpu),
    )


# ---------------------------------------------------------------- graph snapshot (GPU tier)
class GraphSnapshot:
    """A CUDA graph that copies every metadata tensor of `bs` into snapshot buffers.

    Captured against the capture-time tensors, so replaying it shows exactly what a captured
    model graph would read after a metadata replay: writes that land anywhere else are missed.
    """

    def __init__(self, backend, bs: int):
        self.sources = metadata_tensors(backend.decode_cuda_graph_metadata[bs])
        self.snaps = {k: torch.empty_like(v) for k, v in self.sources.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for k, v in self.sources.items():  # warm-up outside capture
                self.snaps[k].copy_(v)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            for k, v in self.sources.items():
                self.snaps[k].copy_(v)

    def replay_into(self, out: dict, prefix: str) -> None:
        self.graph.replay()
        torch.cuda.synchronize()
        for k, v in self.snaps.items():
            out[f"{prefix}/graph_read.{k}"] = v.cpu().clone()


# ---------------------------------------------------------------- scenarios
def build_backend(device, page_size, topk, seed, **kw):
    from sglang.srt.layers.attention.nsa_backend import NativeSparseAttnBackend

    return NativeSparseAttnBackend(make_model_runner(device, page_size, topk, seed), **kw)


def run_single_backend(out: dict, device: str, seed: int, page_size: int, topk: int,
                       capture_bs=(1, 2, 4, 8, 16, 32), replays_per_bs=3) -> None:
    """Capture every bs for each mode, then replay with real batch sizes <= the captured one."""
    gen = torch.Generator().manual_seed(seed)
    max_bs = max(capture_bs)
    for mode in ("decode", "target_verify", "draft_extend"):
        backend = build_backend(device, page_size, topk, seed)
        tokens_per_bs = 1 if mode == "decode" else NUM_DRAFT_TOKENS
        backend.init_cuda_graph_state(max_bs, max_bs * tokens_per_bs)
        fill = backend.get_cuda_graph_seq_len_fill_value()
        snapshots = {}
        for bs in capture_bs:
            capture_inputs = make_replay_inputs(gen, mode, bs, bs, topk, fill, device)
            backend.init_forward_metadata_capture_cuda_graph(
                bs=bs,
                num_tokens=bs * tokens_per_bs,
                req_pool_indices=capture_inputs.req_pool_indices,
                seq_lens=capture_inputs.seq_lens,
                encoder_lens=None,
                forward_mode=forward_mode_of(mode),
                spec_info=spec_info_for(capture_inputs),
            )
            if device == "cuda":
                snapshots[bs] = GraphSnapshot(backend, bs)
        for bs in capture_bs:
            for r in range(replays_per_bs):
                raw_bs = bs if r == 0 else int(torch.randint(1, bs + 1, (1,), generator=gen))
                inputs = make_replay_inputs(gen, mode, bs, raw_bs, topk, fill, device)
                prefix = f"single/{mode}/ps{page_size}/topk{topk}/bs{bs}/r{r}"
                out[f"{prefix}/inputs.seq_lens"] = inputs.seq_lens_cpu
                out[f"{prefix}/inputs.accept_length"] = inputs.accept_length.cpu()
                poison(backend, bs)
                backend.init_forward_metadata_replay_cuda_graph(
                    bs=bs,
                    req_pool_indices=inputs.req_pool_indices,
                    seq_lens=inputs.seq_lens,
                    seq_lens_sum=int(inputs.seq_lens_cpu.sum()),
                    encoder_lens=None,
                    forward_mode=forward_mode_of(mode),
                    spec_info=spec_info_for(inputs),
                    seq_lens_cpu=inputs.seq_lens_cpu,
                )
                dump(out, prefix, backend, bs, mode, inputs)
                if device == "cuda":
                    snapshots[bs].replay_into(out, prefix)


def run_multi_step(out: dict, device: str, seed: int, page_size: int, topk: int,
                   num_steps_list=(1, 3, 5), capture_bs=(1, 4, 16, 64), replays_per_bs=2) -> None:
    """NativeSparseAttnMultiStepBackend (EAGLE draft decode), as the draft CUDA-graph runner uses it.

    Run once with SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA as the environment has it; the
    runner process is started with it on and off.
    """
    from sglang.srt.layers.attention.nsa_backend import NativeSparseAttnMultiStepBackend

    gen = torch.Generator().manual_seed(seed)
    max_bs = max(capture_bs)
    for num_steps in num_steps_list:
        multi = NativeSparseAttnMultiStepBackend(
            make_model_runner(device, page_size, topk, seed), topk=1, speculative_num_steps=num_steps
        )
        multi.init_cuda_graph_state(max_bs, max_bs)
        fill = multi.attn_backends[0].get_cuda_graph_seq_len_fill_value()
        snapshots = {}
        for bs in capture_bs:
            ci = make_replay_inputs(gen, "decode", bs, bs, topk, fill, device)
            multi.init_forward_metadata_capture_cuda_graph(
                SimpleNamespace(batch_size=bs, req_pool_indices=ci.req_pool_indices,
                                seq_lens=ci.seq_lens, spec_info=spec_info_for(ci))
            )
            if device == "cuda":
                snapshots[bs] = [GraphSnapshot(b, bs) for b in multi.attn_backends]
        for bs in capture_bs:
            for r in range(replays_per_bs):
                raw_bs = bs if r == 0 else int(torch.randint(1, bs + 1, (1,), generator=gen))
                inputs = make_replay_inputs(gen, "decode", bs, raw_bs, topk, fill, device)
                for b in multi.attn_backends:
                    poison(b, bs)
                batch = SimpleNamespace(
                    req_pool_indices=inputs.req_pool_indices,
                    seq_lens=inputs.seq_lens,
                    seq_lens_cpu=inputs.seq_lens_cpu,
                    seq_lens_sum=int(inputs.seq_lens_cpu.sum()),
                    spec_info=spec_info_for(inputs),
                )
                multi.init_forward_metadata_replay_cuda_graph(batch, bs)
                for i, b in enumerate(multi.attn_backends):
                    prefix = f"multi/steps{num_steps}/ps{page_size}/topk{topk}/bs{bs}/r{r}/b{i}"
                    dump(out, prefix, b, bs, "decode", inputs)
                    if device == "cuda":
                        snapshots[bs][i].replay_into(out, prefix)


def run_bad_input(out: dict, device: str, seed: int) -> None:
    """draft_extend whose accept lengths overflow the captured rows: record what the replay says."""
    gen = torch.Generator().manual_seed(seed)
    backend = build_backend(device, 1, 128, seed)
    backend.init_cuda_graph_state(4, 4 * NUM_DRAFT_TOKENS)
    inputs = make_replay_inputs(gen, "draft_extend", 4, 4, 128, 1, device)
    backend.init_forward_metadata_capture_cuda_graph(
        bs=4, num_tokens=4 * NUM_DRAFT_TOKENS, req_pool_indices=inputs.req_pool_indices,
        seq_lens=inputs.seq_lens, encoder_lens=None, forward_mode=forward_mode_of("draft_extend"),
        spec_info=spec_info_for(inputs))
    inputs.accept_length.fill_(NUM_DRAFT_TOKENS + 1)
    inputs.extend_seq_lens_cpu = [NUM_DRAFT_TOKENS + 1] * 4
    try:
        backend.init_forward_metadata_replay_cuda_graph(
            bs=4, req_pool_indices=inputs.req_pool_indices, seq_lens=inputs.seq_lens,
            seq_lens_sum=0, encoder_lens=None, forward_mode=forward_mode_of("draft_extend"),
            spec_info=spec_info_for(inputs), seq_lens_cpu=inputs.seq_lens_cpu)
        out["bad/draft_extend_overflow"] = "no error"
    except Exception as e:
        out["bad/draft_extend_overflow"] = f"{type(e).__name__}: {e}"


def run(out: dict, device: str, seed: int, configs: list[dict]) -> None:
    prepare_sglang_globals(device)
    for cfg in configs:
        kind = cfg.pop("kind")
        scenario = {"single": run_single_backend, "multi": run_multi_step,
                    "bad_input": run_bad_input}[kind]
        scenario(out, device, seed, **cfg)
