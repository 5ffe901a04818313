"""SGLang 0.5.8's own CUDA-graph runners, driven around a real NSA attention backend.

A server hands the attention backend what its CUDA-graph runner built: slices of the runner's
int32 buffers, a raw batch padded up to a captured batch size, EagleDraftInput /
EagleVerifyInput objects. These drivers construct the real runners through their real
`__init__` and call their real `capture_one_batch_size` and `replay`, so the backend receives
exactly that; only the model, the eagle worker and process-wide setup are stubbed
(tests/README.md lists every stub).

    driver = make_runner("draft_extend", page_size=64, topk=2048, capture_bs=[1, 4], device="cuda")
    driver.capture()      # what the runner's capture() does, for every captured bs
    batch = raw_batch(driver, seq_lens=[700, 9], req_pool_indices=[3, 5], accept_lengths=[2, 4])
    bs = driver.replay(batch)  # the runner pads 2 requests up to bs 4, calls the backend, replays
    driver.last_call.invoke()  # that backend call again, same arguments (for benchmarks)

Modes: "decode" (CudaGraphRunner, no speculative decoding), "target_verify" (CudaGraphRunner,
EAGLE), "draft_extend" (EAGLEDraftExtendCudaGraphRunner), "draft" (EAGLEDraftCudaGraphRunner
around NativeSparseAttnMultiStepBackend).

Imported only in a process whose sys.path starts with the SGLang tree under test.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from types import SimpleNamespace

import releases
import torch

POOL_SIZE = 300  # requests the req_to_token pool holds
CONTEXT_LEN = 4352  # > 2 * the largest topk, so kv lengths reach "well above topk"
HIDDEN_SIZE = 16  # sizes only the runners' hidden-state buffers; NSA metadata never reads them
VOCAB_SIZE = 32  # sizes only the runners' logits buffers
MTP_STEPS = 3  # target_verify / draft_extend: EAGLE MTP, 3 steps, topk 1 -> 4 draft tokens
SINGLE_BACKEND_MODES = ("decode", "target_verify", "draft_extend")


def num_draft_tokens(num_steps: int = MTP_STEPS) -> int:
    return num_steps + 1  # topk 1: a chain of num_steps drafts plus the verified token


# ---------------------------------------------------------------- server-side setup
def make_server_args(speculative: bool, num_steps: int, cuda_graph_bs):
    """A real ServerArgs with SGLang's defaults and what a DeepSeek-V3.2 server sets here.

    __post_init__ is skipped: it resolves a model path and probes hardware. These are the values
    it would reach for DeepSeek-V3.2 (NSA backends, MTP with topk 1), plus the captured sizes.
    """
    from sglang.srt.server_args import ServerArgs

    args = object.__new__(ServerArgs)
    for f in dataclasses.fields(ServerArgs):
        if f.default is not dataclasses.MISSING:
            setattr(args, f.name, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            setattr(args, f.name, f.default_factory())
    args.model_path = "deepseek-ai/DeepSeek-V3.2"
    dsa = releases.dsa_named(releases.imported_release())  # 0.5.13: "dsa", dsa_*_backend
    args.attention_backend = "dsa" if dsa else "nsa"
    setattr(args, "dsa_prefill_backend" if dsa else "nsa_prefill_backend", "flashmla_sparse")
    setattr(args, "dsa_decode_backend" if dsa else "nsa_decode_backend", "flashmla_sparse")
    if releases.runner_backends(releases.imported_release()):
        # 0.5.14: --cuda-graph-bs-decode, resolved into cuda_graph_config by SGLang's own parser
        args.cuda_graph_bs_decode = list(cuda_graph_bs)
        args._parse_cuda_graph_config()
    else:
        args.cuda_graph_bs = list(cuda_graph_bs)
    if speculative:
        args.speculative_algorithm = "EAGLE"
        args.speculative_num_steps = num_steps
        args.speculative_eagle_topk = 1
        args.speculative_num_draft_tokens = num_draft_tokens(num_steps)
    return args


def prepare_process(device: str, server_args) -> None:
    """Process-wide state a single-GPU server (no DP attention, no expert parallelism) has set up
    before it builds attention backends and CUDA-graph runners."""
    from sglang.srt.distributed import parallel_state
    from sglang.srt.layers import dp_attention
    from sglang.srt.server_args import set_global_server_args_for_scheduler

    set_global_server_args_for_scheduler(server_args)
    # initialize_dp_attention without DP attention: attention TP = the (single) TP rank.
    dp_attention._ATTN_TP_RANK, dp_attention._ATTN_TP_SIZE = 0, 1
    dp_attention._ATTN_DP_RANK, dp_attention._ATTN_DP_SIZE = 0, 1
    # replay_prepare asks the expert-parallel group's size (enable_num_token_non_padded).
    if parallel_state._MOE_EP is None:
        parallel_state._MOE_EP = SimpleNamespace(world_size=1, rank_in_group=0)
    releases.prepare_process(releases.imported_release(), device)  # what only some releases read
    if device == "cpu":
        # NativeSparseAttnBackend.__init__ reads the device capability; a CPU-only torch raises.
        # Report Hopper, the hardware these paths target (only >= 10 changes __init__).
        torch.cuda.get_device_capability = lambda *a, **k: (9, 0)


def make_req_to_token(device: str, page_size: int, seed: int) -> torch.Tensor:
    """req_to_token rows as a real allocator fills them: whole pages, page ids random."""
    gen = torch.Generator().manual_seed(seed)
    pages_per_row = CONTEXT_LEN // page_size
    page_ids = torch.randperm(POOL_SIZE * pages_per_row * 2, generator=gen)
    page_ids = page_ids[: POOL_SIZE * pages_per_row].view(POOL_SIZE, pages_per_row, 1)
    req_to_token = (page_ids * page_size + torch.arange(page_size)).view(POOL_SIZE, -1)
    return req_to_token.to(torch.int32).to(device)


def make_model_runner(device: str, server_args, page_size: int, topk: int, req_to_token):
    """The attributes NativeSparseAttnBackend and the three runners read from a ModelRunner."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    hf_config = SimpleNamespace(architectures=["DeepseekV32ForCausalLM"], index_topk=topk)
    return SimpleNamespace(
        device=device,
        page_size=page_size,
        server_args=server_args,
        spec_algorithm=SpeculativeAlgorithm.from_string(server_args.speculative_algorithm),
        model_config=SimpleNamespace(
            hf_config=hf_config, context_len=CONTEXT_LEN, num_attention_heads=128,
            is_encoder_decoder=False, hidden_size=HIDDEN_SIZE, vocab_size=VOCAB_SIZE,
            dtype=torch.bfloat16,
            # DeepSeek-V3.2's MLA dims (0.5.9's backend __init__ reads them)
            qk_nope_head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64,
            spec_hidden_size=HIDDEN_SIZE,  # the draft's hidden states (0.5.12's runners)
            hc_hidden_size=None,  # ModelConfig's (0.5.13 reads it)
        ),
        dtype=torch.bfloat16,
        kv_cache_dtype=torch.bfloat16,  # ModelRunner's with --kv-cache-dtype auto (0.5.9 reads it)
        token_to_kv_pool=SimpleNamespace(nsa_kv_cache_store_fp8=False,
                                         dsa_kv_cache_store_fp8=False,  # 0.5.13's name
                                         kv_cache_dim=656),
        req_to_token_pool=SimpleNamespace(req_to_token=req_to_token, size=POOL_SIZE),
        tp_group=SimpleNamespace(barrier=lambda: None),  # single rank: nothing to wait for
        tp_size=1,
        dp_size=1,
        # what later releases' runners also read, as a DeepSeek-V3.2 server has it: no HiSparse
        # coordinator, no n-gram embedding (0.5.10 on), no device timer, no hybrid SWA (0.5.11
        # on), no KV canaries, no pipeline parallelism (0.5.13 on)
        hisparse_coordinator=None,
        use_ngram_embedding=False,
        device_timer=None,
        is_hybrid_swa=False,
        canary_manager=None,
        gpu_id=0,
        get_pp_proxy_topk_size=lambda: None,
    )


# ---------------------------------------------------------------- the captured "model"
class GraphBody:
    """What the stub model does inside the runner's captured graph.

    On CUDA it copies every metadata tensor of the captured bs into snapshot buffers, so the real
    CUDA graph SGLang's capture_one_batch_size captures reads exactly what a model's graph would
    read after a metadata replay (writes that land anywhere else are missed). On the CPU there is
    no graph (replay is a no-op) and it only returns the runner's output buffers.
    """

    def __init__(self, backends, device: str):
        self.backends = backends
        self.on_cuda = device == "cuda"
        self.snapshots: dict[int, list[dict]] = {}  # bs -> per backend: name -> snapshot
        self.outputs: dict[tuple, torch.Tensor] = {}

    def run(self, bs: int) -> None:
        if not self.on_cuda:
            return
        if bs not in self.snapshots:  # first (warm-up) run, outside the capture: allocate
            self.snapshots[bs] = [
                {k: torch.empty_like(v) for k, v in metadata_tensors(b, bs).items()}
                for b in self.backends
            ]
        for b, snaps in zip(self.backends, self.snapshots[bs]):
            for k, v in metadata_tensors(b, bs).items():
                snaps[k].copy_(v)

    def read(self, bs: int) -> list[dict]:
        """What the graph read on its last replay, per backend (CUDA only)."""
        torch.cuda.synchronize()
        return [{k: v.cpu().clone() for k, v in s.items()} for s in self.snapshots[bs]]

    def buffer(self, name: str, *shape, dtype=torch.float32) -> torch.Tensor:
        """An output buffer, allocated on the warm-up run (never inside the capture)."""
        key = (name, shape, dtype)
        if key not in self.outputs:
            self.outputs[key] = torch.zeros(shape, dtype=dtype, device=self.backends[0].device)
        return self.outputs[key]


def metadata_tensors(backend, bs: int) -> dict[str, torch.Tensor]:
    """Every tensor of backend.decode_cuda_graph_metadata[bs], nested FlashMLA fields included."""
    metadata = backend.decode_cuda_graph_metadata[bs]
    out = {}
    for field in dataclasses.fields(metadata):
        value = getattr(metadata, field.name)
        if isinstance(value, torch.Tensor):
            out[field.name] = value
        elif value is not None and dataclasses.is_dataclass(value):  # NSAFlashMLAMetadata
            for sub in dataclasses.fields(value):
                out[f"{field.name}.{sub.name}"] = getattr(value, sub.name)
    return out


class StubModel:
    """The target / draft model: forward(input_ids, positions, forward_batch) -> logits output."""

    def __init__(self, body: GraphBody):
        self.body = body

    def forward(self, input_ids, positions, forward_batch):
        from sglang.srt.layers.logits_processor import LogitsProcessorOutput

        self.body.run(forward_batch.batch_size)
        hidden = getattr(forward_batch.spec_info, "hidden_states", None)  # draft extend only
        return LogitsProcessorOutput(
            next_token_logits=forward_batch.next_token_logits_buffer,
            hidden_states=None if hidden is None else hidden[: forward_batch.batch_size],
        )


class StubEagleWorker:
    """The EAGLE worker attributes the two draft runners read; draft_forward is the draft graph.

    Up to 0.5.12 the runners take EAGLEWorker (`model_runner`); from 0.5.13, where only the
    overlap worker exists, its EagleDraftWorker (`draft_runner`, which makes the draft-extend
    runner replay DRAFT_EXTEND_V2)."""

    def __init__(self, model_runner, draft_extend_attn_backend=None):
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        if releases.dsa_named(releases.imported_release()):
            self.draft_runner = model_runner
        else:
            self.model_runner = model_runner
        self.draft_extend_attn_backend = draft_extend_attn_backend
        self.speculative_algorithm = SpeculativeAlgorithm.EAGLE
        self.eagle_use_aux_hidden_state = False
        self.speculative_num_steps = model_runner.server_args.speculative_num_steps
        # EagleDraftWorker's DSA index sharing (0.5.15), off for DeepSeek-V3.2, whose config has
        # no index_share_for_mtp_iteration: the runners allocate no seed top-k buffer
        self.dsa_index_topk = model_runner.model_config.hf_config.index_topk
        self.index_share_for_mtp_iteration = False
        self.seed_dsa_topk_from_draft_extend = False
        # the target model's worker: 0.5.12's draft-extend runner sizes its hidden-state buffer
        # from its model config (the stub shares the draft's: same sizes)
        self.target_worker = SimpleNamespace(model_runner=model_runner)

    def draft_forward(self, forward_batch):
        """(parent_list, top_scores_index, draft_tokens), bs rows each, as EAGLEWorker returns
        (0.5.14's EagleDraftWorker adds draft_probs: None without rejection sampling)."""
        bs = forward_batch.batch_size
        runner = getattr(self, "model_runner", None) or self.draft_runner
        body = runner.model.body
        body.run(bs)
        steps = runner.server_args.speculative_num_steps
        out = tuple(body.buffer(name, bs, steps, dtype=torch.int64)
                    for name in ("parent_list", "top_scores_index", "draft_tokens"))
        return out + (None,) if releases.runner_backends(releases.imported_release()) else out


# ---------------------------------------------------------------- CPU stand-ins for CUDA graphs
class NoGraph:
    """Stands for torch.cuda.CUDAGraph on the CPU: capture runs the body once, replay is a no-op."""

    def replay(self) -> None:
        pass

    def pool(self):
        return None


# Stands for torch.cuda where CudaGraphRunner.capture_one_batch_size asks its device_module
# (0.5.14's runners also record an Event after the metadata replay).
CPU_GRAPH_MODULE = SimpleNamespace(
    synchronize=lambda *a, **k: None, graph_pool_handle=lambda: None,
    Event=lambda *a, **k: SimpleNamespace(record=lambda *a, **k: None))


class CpuGraphBackend:
    """Stands for FullCudaGraphBackend (the runners' graph backend from 0.5.14) on the CPU:
    capture_one runs the body as it does (two warm-ups, each followed by the attention backend's
    post-warm-up hook, then once for the capture) and keeps its output; replay returns it."""

    def __init__(self):
        self.outputs = {}

    @contextlib.contextmanager
    def capture_session(self, stream):
        yield

    def capture_one(self, shape_key, forward_fn, dummies=None, post_warmup_hook=None):
        for _ in range(2):
            forward_fn()
            if post_warmup_hook is not None:
                post_warmup_hook()
        self.outputs[shape_key] = forward_fn()

    def can_run(self, forward_batch, shape_key):
        return shape_key in self.outputs

    @contextlib.contextmanager
    def replay_session(self):
        yield

    def replay(self, shape_key, static_forward_batch, **kwargs):
        return self.outputs[shape_key]

    def cleanup(self):
        self.outputs.clear()


def _use_cpu_graphs(runner) -> None:
    """Only what needs a GPU is replaced: making, warming up and capturing a graph."""
    runner._create_device_graph = NoGraph  # CudaGraphRunner
    runner._create_graph = NoGraph  # the draft runners
    runner.device_module = CPU_GRAPH_MODULE
    runner._capture_init = lambda run_once: [run_once() for _ in range(2)]  # minus the GPU sync
    runner._capture_graph = lambda graph, pool, stream, run_once: run_once()
    if hasattr(runner, "backend"):  # 0.5.14: the graph backend the runner resolved
        runner.backend = CpuGraphBackend()


# ---------------------------------------------------------------- drivers
@dataclasses.dataclass
class BackendCall:
    """One call a runner made into the attention backend, with the arguments as they were."""

    fn: object
    args: dict

    def invoke(self):
        return self.fn(**self.args)


def replay_entry(rel: str) -> str:
    """The backend method a runner's replay calls: from 0.5.13 `init_forward_metadata_out_graph`
    (also called at capture, with in_capture=True), before `init_forward_metadata_replay_cuda_graph`."""
    if releases.dsa_named(rel):
        return "init_forward_metadata_out_graph"
    return "init_forward_metadata_replay_cuda_graph"


def _frozen(value):
    """A ForwardBatch (or a runner's view of one) / spec_info as it is at call time: the runner
    restores their fields after the replay; the tensors they point at stay put until the next."""
    if not (dataclasses.is_dataclass(value) or isinstance(value, SimpleNamespace)):
        return value
    value = copy.copy(value)
    spec_info = getattr(value, "spec_info", None)
    if spec_info is not None and dataclasses.is_dataclass(spec_info):
        value.spec_info = copy.copy(spec_info)
    return value


def _spy_on_replay(driver, target) -> None:
    """Record what the runner passes to the backend's replay entry (replay_entry) on a replay."""
    name = replay_entry(releases.imported_release())
    original = getattr(target, name)
    signature = inspect.signature(original)

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        if not bound.get("in_capture", False):
            driver.last_call = BackendCall(original, {k: _frozen(v) for k, v in bound.items()})
        return original(*args, **kwargs)

    setattr(target, name, spy)


def _construct(cls, owner):
    """The runner's real __init__, without its capture(): the driver captures each bs itself."""
    runner = object.__new__(cls)
    runner.capture = lambda: None
    cls.__init__(runner, owner)
    del runner.capture
    return runner


@dataclasses.dataclass
class RunnerDriver:
    mode: str
    device: str
    runner: object  # the SGLang runner
    backends: list  # the NativeSparseAttnBackend(s) whose metadata the replay fills
    target: object  # what the runner calls: the backend, or NativeSparseAttnMultiStepBackend
    body: GraphBody
    model_runner: object
    last_call: BackendCall | None = None

    @property
    def capture_bs(self) -> list[int]:
        return self.runner.capture_bs

    @property
    def num_steps(self) -> int:
        return self.model_runner.server_args.speculative_num_steps or 0

    def capture(self) -> None:
        """What the runner's capture() does, per bs: largest first, graphs and outputs kept."""
        rel = releases.imported_release()
        if releases.runner_backends(rel):
            from sglang.srt.model_executor.runner_utils.capture_mode import model_capture_mode

            # 0.5.14's capture(): the captured graph needs the fill value in the (shared) buffers
            self.runner.buffers.seq_lens.fill_(self.runner.seq_len_fill_value)
            self.runner.buffers.seq_lens_cpu.fill_(self.runner.seq_len_fill_value)
        else:
            from sglang.srt.model_executor.cuda_graph_runner import model_capture_mode

        stream = None
        if self.device == "cuda":  # graph_capture(): a side stream that waits for the current one
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
        self.runner.stream = stream
        on_stream = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        session = (self.runner.backend.capture_session(stream) if releases.runner_backends(rel)
                   else contextlib.nullcontext())
        with model_capture_mode(), on_stream, session:
            for bs in reversed(self.capture_bs):
                self.capture_one(bs)
        if stream is not None:
            torch.cuda.synchronize()

    def capture_one(self, bs: int) -> None:
        # CudaGraphRunner runs the forward it is given; the draft runners call their worker's.
        forward = self.model_runner.model.forward
        if releases.runner_backends(releases.imported_release()):
            self.runner.capture_one_shape(bs, forward)  # the graph backend keeps graph, output
            return
        graph, output = self.runner.capture_one_batch_size(bs, forward)
        self.runner.graphs[bs] = graph
        self.runner.output_buffers[bs] = output

    def replay(self, batch) -> int:
        """The runner's replay: pad, fill its buffers, call the backend (recorded in last_call),
        replay the graph. Returns the captured bs the runner padded the batch to."""
        self.last_call = None
        if releases.runner_backends(releases.imported_release()):
            self.runner.execute(batch)  # 0.5.14's name for the runner's replay
        else:
            self.runner.replay(batch)
        if self.last_call is None:
            raise RuntimeError(f"{type(self.runner).__name__}.replay did not call the backend")
        return self.runner.bs


def backend_classes():
    """The release's NSA backend and multi-step backend (0.5.13: DeepseekSparseAttnBackend and
    DeepseekSparseAttnMultiStepBackend in dsa_backend.py)."""
    if releases.dsa_named(releases.imported_release()):
        from sglang.srt.layers.attention import dsa_backend as module

        return module.DeepseekSparseAttnBackend, module.DeepseekSparseAttnMultiStepBackend
    from sglang.srt.layers.attention import nsa_backend as module

    return module.NativeSparseAttnBackend, module.NativeSparseAttnMultiStepBackend


def decode_runner_class():
    """The target model's decode / verify runner (0.5.14: DecodeCudaGraphRunner)."""
    if releases.runner_backends(releases.imported_release()):
        from sglang.srt.model_executor.runner.decode_cuda_graph_runner import (
            DecodeCudaGraphRunner,
        )

        return DecodeCudaGraphRunner
    from sglang.srt.model_executor.cuda_graph_runner import CudaGraphRunner

    return CudaGraphRunner


def make_runner(mode: str, page_size: int, topk: int, capture_bs, device: str, *,
                num_steps: int = MTP_STEPS, seed: int = 0) -> RunnerDriver:
    """A real SGLang runner for `mode` around a real NSA backend, ready to capture."""
    from sglang.srt.speculative.eagle_draft_cuda_graph_runner import EAGLEDraftCudaGraphRunner
    from sglang.srt.speculative.eagle_draft_extend_cuda_graph_runner import (
        EAGLEDraftExtendCudaGraphRunner,
    )

    NativeSparseAttnBackend, NativeSparseAttnMultiStepBackend = backend_classes()
    CudaGraphRunner = decode_runner_class()

    args = make_server_args(mode != "decode", num_steps if mode == "draft" else MTP_STEPS,
                            capture_bs)
    prepare_process(device, args)
    model_runner = make_model_runner(device, args, page_size, topk,
                                     make_req_to_token(device, page_size, seed))
    if mode in ("decode", "target_verify"):  # the target model's runner
        backend = NativeSparseAttnBackend(model_runner)
        model_runner.attn_backend = backend
        cls, backends, target, owner = CudaGraphRunner, [backend], backend, model_runner
    elif mode == "draft_extend":  # EAGLEWorker.draft_extend_attn_backend (DraftBackendFactory)
        backend = NativeSparseAttnBackend(model_runner, skip_prefill=False)
        model_runner.attn_backend = backend  # the draft model runner's own (same fill value)
        cls, backends, target = EAGLEDraftExtendCudaGraphRunner, [backend], backend
        owner = StubEagleWorker(model_runner, draft_extend_attn_backend=backend)
    elif mode == "draft":  # EAGLEWorker.draft_attn_backend
        multi = NativeSparseAttnMultiStepBackend(model_runner, topk=1,
                                                 speculative_num_steps=num_steps)
        model_runner.draft_attn_backend = multi
        cls, backends, target = EAGLEDraftCudaGraphRunner, multi.attn_backends, multi
        owner = StubEagleWorker(model_runner)
    else:
        raise ValueError(f"unknown runner mode {mode!r}")
    model_runner.is_draft_worker = mode in ("draft", "draft_extend")
    if releases.shared_graph_output(releases.imported_release()):
        _model_runner_own(model_runner)
    body = GraphBody(backends, device)
    model_runner.model = StubModel(body)
    runner = _construct(cls, owner)
    if device == "cpu":
        _use_cpu_graphs(runner)
    driver = RunnerDriver(mode, device, runner, backends, target, body, model_runner)
    _spy_on_replay(driver, target)
    return driver


def _model_runner_own(stub) -> None:
    """What the runners ask the ModelRunner from 0.5.15 (releases.shared_graph_output):
    ModelRunner's own methods bound to the stub, and the shared logits buffer made by SGLang's
    own GraphSharedOutput.create_for_model_runner, as ModelRunner.init_cuda_graphs does."""
    import types

    from sglang.srt.model_executor.graph_shared_output import GraphSharedOutput
    from sglang.srt.model_executor.model_runner import ModelRunner

    for name in ("decode_num_tokens_per_bs", "max_decode_logits_rows"):
        setattr(stub, name, types.MethodType(getattr(ModelRunner, name), stub))
    stub.graph_shared_output = GraphSharedOutput.create_for_model_runner(stub)


# ---------------------------------------------------------------- raw batches, as a server has them
def raw_batch(driver: RunnerDriver, seq_lens, req_pool_indices, accept_lengths=None,
              accept_length_dtype=torch.int32):
    """The ForwardBatch a server hands this driver's runner, for these values.

    Dtypes and devices are those SGLang 0.5.8 produces upstream of the runner: ScheduleBatch
    holds req_pool_indices, seq_lens, seq_lens_cpu (CPU), out_cache_loc and positions in int64;
    ForwardBatch.init_new makes extend_seq_lens int32; EAGLE's verify step makes accept_length
    int32, or int64 when a request finished in that step ((accept_index != -1).sum(dim=1) - 1).
    For draft_extend, `seq_lens` already include the accepted tokens and `accept_lengths` are the
    tokens per request (accepted drafts + 1, after prepare_extend_after_decode's add_(1)).
    """
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    seq_cpu = torch.as_tensor(seq_lens, dtype=torch.int64)
    seq = seq_cpu.to(driver.device)
    mode_fields = {"decode": _decode_fields, "target_verify": _verify_fields,
                   "draft": _draft_fields, "draft_extend": _draft_extend_fields}[driver.mode]
    pools = {}
    if not releases.dsa_named(releases.imported_release()):  # fields of ForwardBatch to 0.5.12
        pools = dict(req_to_token_pool=driver.model_runner.req_to_token_pool,
                     token_to_kv_pool=driver.model_runner.token_to_kv_pool)
    return ForwardBatch(
        batch_size=seq.shape[0],
        req_pool_indices=torch.as_tensor(req_pool_indices, dtype=torch.int64).to(driver.device),
        seq_lens=seq,
        seq_lens_cpu=seq_cpu,
        seq_lens_sum=int(seq_cpu.sum()),
        spec_algorithm=driver.model_runner.spec_algorithm,
        **pools,
        **mode_fields(driver, seq, seq_cpu, accept_lengths, accept_length_dtype),
    )


def _ids(n: int, device, dtype=torch.int64) -> torch.Tensor:
    return torch.arange(n, dtype=dtype, device=device)  # token ids / cache slots: values unread


def _decode_fields(driver, seq, seq_cpu, *_):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    n = seq.shape[0]
    return dict(forward_mode=ForwardMode.DECODE, input_ids=_ids(n, seq.device),
                out_cache_loc=_ids(n, seq.device), positions=(seq - 1).clamp(min=0),
                capture_hidden_mode=CaptureHiddenMode.NULL)


def _verify_fields(driver, seq, seq_cpu, *_):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    tokens = seq.shape[0] * num_draft_tokens()
    positions = (seq[:, None] + _ids(num_draft_tokens(), seq.device)[None, :]).flatten()
    return dict(forward_mode=ForwardMode.TARGET_VERIFY, input_ids=_ids(tokens, seq.device),
                out_cache_loc=_ids(tokens, seq.device), positions=positions,
                spec_info=verify_input(seq.shape[0], positions, seq_cpu),
                capture_hidden_mode=CaptureHiddenMode.FULL)


def _draft_fields(driver, seq, seq_cpu, *_):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    raw_bs = seq.shape[0]
    positions = seq.repeat_interleave(1)  # EAGLEWorker: seq_lens.repeat_interleave(topk)
    spec_info = draft_input(raw_bs, seq.device, positions)
    return dict(forward_mode=ForwardMode.DECODE, input_ids=None,
                out_cache_loc=_ids(raw_bs * driver.num_steps, seq.device), positions=positions,
                spec_info=spec_info, capture_hidden_mode=CaptureHiddenMode.LAST)


def _draft_extend_fields(driver, seq, seq_cpu, accept_lengths, accept_length_dtype):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode

    if releases.dsa_named(releases.imported_release()):
        return _draft_extend_v2_fields(driver, seq, seq_cpu, accept_lengths)

    accept = torch.as_tensor(accept_lengths, dtype=torch.int64)
    tokens = int(accept.sum())
    positions = torch.cat([torch.arange(s - a, s) for s, a in zip(seq_cpu, accept)])
    positions = positions.to(seq.device)
    spec_info = draft_extend_input(seq.device, positions, tokens,
                                   accept.to(seq.device), accept_length_dtype)
    return dict(forward_mode=ForwardMode.DRAFT_EXTEND,
                input_ids=_ids(tokens, seq.device, torch.int32),  # the verified ids (int32)
                out_cache_loc=_ids(tokens, seq.device), positions=positions,
                extend_seq_lens=accept.to(torch.int32).to(seq.device),
                extend_seq_lens_cpu=accept.tolist(), extend_num_tokens=tokens,
                spec_info=spec_info, capture_hidden_mode=CaptureHiddenMode.LAST)


def _draft_extend_v2_fields(driver, seq, seq_cpu, accept_lengths):
    """The batch EagleDraftWorker hands the draft-extend runner from 0.5.13 (the overlap worker,
    DRAFT_EXTEND_V2; prepare_for_draft_extend): every request extends by the whole tree width
    (num_draft_tokens), seq_lens count those tokens, and spec_info is an EagleDraftExtendInput
    with verify's int32 accept counts (num_accept_tokens = num_correct_drafts + 1)."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode
    from sglang.srt.speculative.eagle_info import EagleDraftExtendInput

    raw_bs, n = seq.shape[0], num_draft_tokens()
    accept = torch.as_tensor(accept_lengths, dtype=torch.int32).to(seq.device)
    positions = (seq[:, None] - n + _ids(n, seq.device)[None, :]).flatten()
    spec_info = EagleDraftExtendInput(
        hidden_states=torch.zeros((raw_bs * n, HIDDEN_SIZE), dtype=torch.bfloat16,
                                  device=seq.device),
        num_correct_drafts=accept - 1, num_accept_tokens=accept,
        num_tokens_per_req=n, num_tokens_for_logprob_per_req=n)
    return dict(forward_mode=ForwardMode.DRAFT_EXTEND_V2,
                input_ids=_ids(raw_bs * n, seq.device), out_cache_loc=_ids(raw_bs * n, seq.device),
                positions=positions,
                extend_seq_lens=torch.full((raw_bs,), n, dtype=torch.int32, device=seq.device),
                extend_seq_lens_cpu=[n] * raw_bs, extend_num_tokens=raw_bs * n,
                spec_info=spec_info, capture_hidden_mode=CaptureHiddenMode.FULL)


def _fields(**fields) -> dict:
    return {releases.spec_info_field(name): value for name, value in fields.items()}


def draft_input(raw_bs: int, device: str, positions):
    """SGLang's EagleDraftInput as the eagle worker hands it to the draft runner (topk 1)."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleDraftInput

    spec_info = EagleDraftInput(**_fields(
        topk_p=torch.ones((raw_bs, 1), dtype=torch.float32, device=device),
        topk_index=torch.zeros((raw_bs, 1), dtype=torch.int64, device=device),
        hidden_states=torch.zeros((raw_bs, HIDDEN_SIZE), dtype=torch.bfloat16, device=device),
        verified_id=torch.zeros((raw_bs,), dtype=torch.int32, device=device),
        capture_hidden_mode=CaptureHiddenMode.LAST,
        num_tokens_per_batch=1,
    ))
    spec_info.positions = positions  # set by the worker, not a dataclass field
    return spec_info


def draft_extend_input(device: str, positions, tokens: int, accept, accept_dtype):
    """The spec info of a draft-extend forward as EAGLE's verify step leaves it: its hidden
    states and accept counts (`accept`: tokens per request, harness/releases.accept_fields), and
    0.5.8's EagleDraftInput fields the draft-extend runner reads (releases.draft_extend_input_class)."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleDraftInput

    cls = releases.draft_extend_input_class()
    raw_bs = accept.shape[0]
    fields = _fields(
        hidden_states=torch.zeros((tokens, HIDDEN_SIZE), dtype=torch.bfloat16, device=device),
        capture_hidden_mode=CaptureHiddenMode.LAST,
        num_tokens_per_batch=num_draft_tokens(),
    )
    if cls is EagleDraftInput:
        fields.update(_fields(
            topk_p=torch.ones((raw_bs, 1), dtype=torch.float32, device=device),
            topk_index=torch.zeros((raw_bs, 1), dtype=torch.int64, device=device),
            verified_id=torch.zeros((raw_bs,), dtype=torch.int32, device=device),
        ))
    spec_info = cls(**fields, **releases.accept_fields(accept, accept_dtype))
    spec_info.positions = positions  # set by the worker (prepare_extend_after_decode)
    return spec_info


def verify_input(raw_bs: int, positions, seq_lens_cpu):
    """SGLang's EagleVerifyInput as EAGLEWorker.draft builds it (topk 1: a chain of drafts)."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleVerifyInput

    n = num_draft_tokens()
    device = positions.device
    chain = torch.arange(n, dtype=torch.int64, device=device)
    return EagleVerifyInput(
        draft_token=torch.zeros(raw_bs * n, dtype=torch.int64, device=device),
        custom_mask=torch.ones(raw_bs * n * n, dtype=torch.bool, device=device),
        positions=positions,
        **_fields(
            retrive_index=(chain + n * torch.arange(raw_bs, device=device)[:, None]),
            retrive_next_token=torch.where(chain + 1 < n, chain + 1, -1).repeat(raw_bs, 1),
            retrive_next_sibling=torch.full((raw_bs, n), -1, dtype=torch.int64, device=device),
            retrive_cum_len=None,
        ),
        spec_steps=MTP_STEPS,
        topk=1,
        draft_token_num=n,
        capture_hidden_mode=CaptureHiddenMode.FULL,
        seq_lens_sum=int(seq_lens_cpu.sum()),
        seq_lens_cpu=seq_lens_cpu,
    )
