"""NSA backend scenarios: SGLang's real NativeSparseAttnBackend / MultiStepBackend, called by SGLang
0.5.8's real CUDA-graph runners (sglang_runners.py), with every metadata buffer poisoned before
each replay and dumped after it.

Imported only inside a runner process whose sys.path starts with the SGLang tree under test.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import releases
import torch
from sglang_runners import (
    CONTEXT_LEN,
    POOL_SIZE,
    SINGLE_BACKEND_MODES,
    make_runner,
    metadata_tensors,
    num_draft_tokens,
    raw_batch,
)

POISON = -777_777  # fits int32; no real length, index or offset ever takes this value

# Arange constants a replay never rewrites (SGLang: "cu_seqlens_q is always arange, no need to
# copy"); nsa_cu_seqlens_q aliases the backend's shared arange buffer, so poisoning it would corrupt
# state outside the replay contract. They are still dumped, so any write to them shows up.
REPLAY_CONSTANTS = ("cu_seqlens_q", "nsa_cu_seqlens_q")
# What set_nsa_prefill_impl (re)sets at the start of every 0.5.8 replay.
PREFILL_STATE = ("use_mha", "nsa_prefill_impl", "nsa_decode_impl")


def named(name: str) -> str:
    """An NSA name as the imported release spells it (from 0.5.13: dsa_*)."""
    return name.replace("nsa_", "dsa_") if releases.dsa_named(releases.imported_release()) \
        else name


# ---------------------------------------------------------------- poison / dump
def poison(backend) -> None:
    """Poison every buffer a replay may write, for every captured bs, and the per-replay state
    (use_mha as an earlier MHA prefill leaves it: every replay must reset it)."""
    state = backend.decode_cuda_graph_metadata
    for name in ("cache_seqlens", "cu_seqlens_k", "page_table"):
        state[name].fill_(POISON)
    for bs in [k for k in state if isinstance(k, int)]:
        for name, t in metadata_tensors(backend, bs).items():
            if name in map(named, REPLAY_CONSTANTS):
                continue
            t.fill_(POISON if t.dtype in (torch.int32, torch.int64) else float("nan"))
    backend.use_mha = True


def metadata_scalars(metadata) -> dict[str, object]:
    return {
        f.name: getattr(metadata, f.name)
        for f in dataclasses.fields(metadata)
        if isinstance(getattr(metadata, f.name), (int, list, type(None)))
    }


def backend_inputs(driver) -> dict[str, torch.Tensor]:
    """The index / length tensors the runner handed the backend on its last replay, as handed."""
    args = driver.last_call.args
    batch = args.get("forward_batch")  # the multi-step backend takes the ForwardBatch itself
    names = ("req_pool_indices", "seq_lens", "seq_lens_cpu")
    inputs = {n: getattr(batch, n) if batch is not None else args[n] for n in names}
    if driver.mode == "draft_extend":
        spec_info = batch.spec_info if batch is not None else args["spec_info"]
        # recorded under 0.5.8's name (releases.accept_field: the release's)
        inputs["spec_info.accept_length"] = getattr(spec_info, releases.accept_field())
    return inputs


def seen_by_backend(driver, bs: int):
    """(kv length per request, query tokens per request) of the batch the backend was given."""
    inputs = backend_inputs(driver)
    seq = inputs["seq_lens_cpu"][:bs].long()
    if driver.mode == "target_verify":
        n = num_draft_tokens()
        return seq + n, torch.full_like(seq, n)
    if driver.mode == "draft_extend":
        accept = inputs["spec_info.accept_length"]
        return seq, accept[:bs].cpu().long()
    return seq, torch.ones_like(seq)


def unread_masks(kv, ext, page_table_1, page_size: int) -> dict[str, torch.Tensor]:
    """Page-table cells SGLang 0.5.8 writes on replay but no reader ever reads.

    0.5.8 copies `req_to_token[req, :max_len]` into every row, max_len being the batch's longest
    kv length; readers (FlashMLA / FA3 / the indexer's topk transform and DeepGEMM's paged MQA
    logits) only look below each row's own kv length (blocks below ceil(kv_len / page_size)).
    The fast paths skip the cells past a row's kv length, so those are exempt from comparison.
    """
    rows, cols = page_table_1.shape
    row_kv = torch.repeat_interleave(kv, ext)[:rows]
    row_kv = torch.cat([row_kv, row_kv.new_zeros(rows - row_kv.shape[0])])
    written = (torch.arange(rows) < int(ext.sum()))[:, None]
    masks = {}
    for name, unit, width in (("page_table_1", 1, cols),
                              ("real_page_table", page_size, -(-cols // page_size))):
        idx = torch.arange(width)[None, :]
        pristine_writes = written & (idx < -(-int(kv.max()) // unit))
        read = idx < (-(-row_kv // unit))[:, None]
        masks[name] = pristine_writes & ~read
    return masks


def received(driver) -> str:
    """Dtype, shape and device of each index / length input the backend was handed."""
    return " ".join(f"{n}={str(t.dtype).removeprefix('torch.')}{list(t.shape)}@{t.device.type}"
                    for n, t in backend_inputs(driver).items())


def dump(out: dict, prefix: str, driver, backend, bs: int) -> None:
    metadata = backend.decode_cuda_graph_metadata[bs]
    kv, ext = seen_by_backend(driver, bs)
    for name, mask in unread_masks(kv, ext, metadata.page_table_1, backend.real_page_size).items():
        out[f"{prefix}/unread.{name}"] = mask
    out[f"{prefix}/forward_metadata_is_graph_metadata"] = backend.forward_metadata is metadata
    for name, t in metadata_tensors(backend, bs).items():
        out[f"{prefix}/{name}"] = t.detach().cpu().clone()
    for name, v in metadata_scalars(metadata).items():
        out[f"{prefix}/{name}"] = v
    state = backend.decode_cuda_graph_metadata
    for name in ("cache_seqlens", "cu_seqlens_q", "cu_seqlens_k", "page_table"):
        out[f"{prefix}/graph_state.{name}"] = state[name].detach().cpu().clone()
    for name in map(named, PREFILL_STATE):
        out[f"{prefix}/backend.{name}"] = getattr(backend, name)


# ---------------------------------------------------------------- raw batches
def replay_plan(capture_bs, replays_per_bs: int, gen) -> list[tuple[int, int, int, bool]]:
    """(captured bs, replay index, raw bs, a request finished) per replay.

    Even replays fill the captured bs exactly, odd ones are padded (a raw bs between the next
    smaller captured bs and this one) where one exists. Every other replay has a request that
    finished in the verify step (draft_extend then gets an int64 accept_length when unpadded).
    """
    plan = []
    for i, bs in enumerate(capture_bs):
        smaller = capture_bs[i - 1] if i else 0
        for r in range(replays_per_bs):
            raw_bs = bs
            if r % 2 == 1 and bs - smaller >= 2:
                raw_bs = int(torch.randint(smaller + 1, bs, (1,), generator=gen))
            plan.append((bs, r, raw_bs, (i + r) % 2 == 1))
    return plan


def random_values(gen, mode: str, raw_bs: int, topk: int):
    """seq_lens mixing short, around-topk and long; distinct request slots; accept lengths."""
    lo = num_draft_tokens() if mode == "draft_extend" else 1
    hi = min(3 * topk, CONTEXT_LEN - num_draft_tokens())
    choices = torch.stack([
        torch.randint(lo, lo + 8, (raw_bs,), generator=gen),
        torch.randint(max(lo, topk - 8), topk + 8, (raw_bs,), generator=gen),
        torch.randint(lo, hi + 1, (raw_bs,), generator=gen),
    ])
    pick = torch.randint(0, 3, (raw_bs,), generator=gen)
    seq_lens = choices.gather(0, pick.view(1, -1)).view(-1).clamp(lo, hi)
    req_pool_indices = torch.randperm(POOL_SIZE, generator=gen)[:raw_bs]
    accept = torch.randint(1, num_draft_tokens() + 1, (raw_bs,), generator=gen)
    return seq_lens, req_pool_indices, accept


def make_batch(driver, gen, raw_bs: int, topk: int, request_finished: bool = False):
    seq_lens, reqs, accept = random_values(gen, driver.mode, raw_bs, topk)
    # A request that finished in the verify step makes EAGLE's accept_length int64.
    dtype = torch.int64 if request_finished else torch.int32
    return raw_batch(driver, seq_lens, reqs, accept, accept_length_dtype=dtype)


def record_inputs(out: dict, prefix: str, driver, bs: int) -> None:
    out[f"{prefix}/raw_bs"] = driver.runner.raw_bs
    out[f"{prefix}/received"] = received(driver)
    for name, t in backend_inputs(driver).items():
        out[f"{prefix}/inputs.{name}"] = t[:bs].cpu().clone()


# ---------------------------------------------------------------- scenarios
def replay_and_dump(out: dict, replays: Counter, driver, batch, label: str, bs: int, r: int):
    """Poison, let the runner replay `batch` (planned to pad up to captured `bs`), dump every
    backend it filled under f"{label}/bs{bs}/r{r}" (plus /b{i} per multi-step backend)."""
    for backend in driver.backends:
        poison(backend)
    padded_to = driver.replay(batch)
    if padded_to != bs:
        raise AssertionError(f"{label}: runner padded {batch.batch_size} to {padded_to}, not {bs}")
    multi = driver.mode == "draft"
    reads = driver.body.read(bs) if driver.device == "cuda" else None
    for i, backend in enumerate(driver.backends):
        prefix = f"{label}/bs{bs}/r{r}" + (f"/b{i}" if multi else "")
        if i == 0:
            record_inputs(out, prefix, driver, bs)
        dump(out, prefix, driver, backend, bs)
        if reads is not None:
            for name, t in reads[i].items():
                out[f"{prefix}/graph_read.{name}"] = t
    count_replay(replays, driver, bs)


def count_replay(replays: Counter, driver, bs: int) -> None:
    """What harness/served.py derives the expected served counts from."""
    if driver.mode != "draft":
        replays["single"] += 1
        replays[f"single.{driver.mode}"] += 1
        return
    replays["multi"] += 1
    replays[f"multi.steps{driver.num_steps}"] += 1
    replays["multi.step_backends"] += len(driver.backends)
    replays["multi.bs1"] += int(bs == 1)  # every destination contiguous: _foreach_copy_


def run_single_backend(out: dict, replays: Counter, device: str, seed: int, page_size: int,
                       topk: int, capture_bs=(1, 2, 4, 8, 16, 32), replays_per_bs=3,
                       modes=SINGLE_BACKEND_MODES) -> None:
    """Each mode's runner captures every bs, then replays raw batches padded up to each."""
    gen = torch.Generator().manual_seed(seed)
    for mode in modes:
        driver = make_runner(mode, page_size, topk, capture_bs, device, seed=seed)
        driver.capture()
        label = f"single/{mode}/ps{page_size}/topk{topk}"
        for bs, r, raw_bs, finished in replay_plan(capture_bs, replays_per_bs, gen):
            batch = make_batch(driver, gen, raw_bs, topk, request_finished=finished)
            replay_and_dump(out, replays, driver, batch, label, bs, r)


def run_multi_step(out: dict, replays: Counter, device: str, seed: int, page_size: int, topk: int,
                   num_steps_list=None, capture_bs=(1, 4, 16, 64), replays_per_bs=2) -> None:
    """NativeSparseAttnMultiStepBackend under EAGLEDraftCudaGraphRunner (EAGLE draft decode).

    Runs with SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA as the environment has it; the runner
    process is started with it on and off.
    """
    gen = torch.Generator().manual_seed(seed)
    for num_steps in num_steps_list or releases.draft_steps(releases.imported_release()):
        driver = make_runner("draft", page_size, topk, capture_bs, device, num_steps=num_steps,
                             seed=seed)
        driver.capture()
        label = f"multi/steps{num_steps}/ps{page_size}/topk{topk}"
        for bs, r, raw_bs, _ in replay_plan(capture_bs, replays_per_bs, gen):
            replay_and_dump(out, replays, driver, make_batch(driver, gen, raw_bs, topk), label,
                            bs, r)


def run_bad_input(out: dict, replays: Counter, device: str, seed: int) -> None:
    """draft_extend whose accept lengths overflow the rows captured for its bs: record the error.

    Captured bs 4 and 8, so the runner's own buffers (8 x 4 tokens) take the 4 x 5 tokens and
    the backend gets bs 4, whose metadata has 4 x 4 rows.
    """
    gen = torch.Generator().manual_seed(seed)
    driver = make_runner("draft_extend", 1, 128, [4, 8], device, seed=seed)
    driver.capture()
    seq_lens, reqs, _ = random_values(gen, "draft_extend", 4, 128)
    too_many = num_draft_tokens() + 1
    batch = raw_batch(driver, seq_lens.clamp(min=too_many), reqs, [too_many] * 4)
    # DRAFT_EXTEND_V2 (from 0.5.13) has no host count to check without a sync: the fast path
    # serves it within the captured rows (docs/DIFFERENCES.md), so it counts as a replay there
    replays["single" if releases.draft_extend_v2(releases.imported_release()) else "rejected"] += 1
    backend = driver.backends[0]
    poison(backend)
    try:
        driver.replay(batch)
        out["bad/draft_extend_overflow"] = "no error"
    except Exception as e:
        out["bad/draft_extend_overflow"] = f"{type(e).__name__}: {e}"
    # rows of the shared page table past the 4 x 4 captured for bs 4 (bs 8's): untouched?
    past = backend.decode_cuda_graph_metadata["page_table"][4 * num_draft_tokens():]
    out["bad/rows_past_capture_written"] = bool((past != POISON).any())


def run(out: dict, device: str, seed: int, configs: list[dict]) -> None:
    replays: Counter = Counter(out.get("_meta/replays", {}))  # the runner calls it per config
    try:
        for cfg in configs:
            cfg = dict(cfg)
            scenario = {"single": run_single_backend, "multi": run_multi_step,
                        "bad_input": run_bad_input}[cfg.pop("kind")]
            scenario(out, replays, device, seed, **cfg)
    finally:  # also what a scenario that raised (runner --keep-going) replayed before
        out["_meta/replays"] = dict(replays)
