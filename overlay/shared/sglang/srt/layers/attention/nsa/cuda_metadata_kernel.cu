// Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
//
// nsa-fastpath: CUDA C++ version of triton_metadata_kernel.py (same outputs, same contract; the
// Python docstring there says what is written). One launch, no host sync, outputs addressed
// through a device table of buffer pointers ([n_dest, 7] int64, one row per step backend).
//
// Inputs are taken as SGLang passes them: req_pool_indices and seq_lens int32 (the CUDA-graph
// runners' buffers) or int64 (a ScheduleBatch's own tensors), accept_length int32 or int64, each
// with any stride; req_to_token int32 with any strides. Nothing is copied or converted on the host.
// Bounds (never an out-of-bounds read): a request index outside [0, pool rows) gets page-table
// cells of 0 (SGLang's padding slot) instead of a req_to_token read; a kv length above the
// req_to_token row or the page-table width is clamped to it.
//
// Layout: a 2-D grid of (row tiles) x (column tiles). Every block finds, for each of its rows
// (one per extend token), the request the row belongs to -- by linear search over the requests'
// row offsets for small batches, binary search for large ones (threshold chosen by the caller
// from measurements, docs/BENCHMARKS.md) -- then copies its column tile of that request's
// req_to_token row. Blocks of the first column tile also write the 1-D metadata of their rows,
// and block (0, 0) the per-request fields. Row offsets and prefix sums over requests come from a
// block-wide scan in shared memory (bs <= kMaxBs). Only portable CUDA (cub, no arch-specific
// instructions): it builds for sm_80 and up, Hopper and Blackwell included.
#include <cstdint>

#include <cub/block/block_scan.cuh>

namespace nsa_fastpath {

constexpr int kThreads = 256;
constexpr int kItems = 4;  // per thread in the scans
constexpr int kMaxBs = kThreads * kItems;
constexpr int kRowsPerBlock = 8;
constexpr int kColsPerBlock = 1024;
constexpr int kFields = 7;  // cache_seqlens, cu_seqlens_k, page_table_1, real_page_table,
                            // nsa_seqlens_expanded, nsa_cache_seqlens, nsa_cu_seqlens_k
constexpr int kMaxScheduleDests = 16;

enum Mode : int { kDecode = 0, kTargetVerify = 1, kDraftExtend = 2 };

// A 1-D int32 or int64 device array with an element stride.
struct IndexArray {
  const void* ptr;
  int64_t stride;
  int is64;
};

__device__ __forceinline__ int64_t load(const IndexArray& a, int64_t i) {
  return a.is64 ? static_cast<const int64_t*>(a.ptr)[i * a.stride]
                : static_cast<const int32_t*>(a.ptr)[i * a.stride];
}

struct Args {
  const int32_t* req_to_token;
  int64_t req_to_token_stride0, req_to_token_stride1, pool_rows, req_to_token_cols;
  IndexArray req_pool_indices, seq_lens, accept_length;
  const int64_t* dest_table;
  int64_t page_table_stride;
  int64_t real_page_table_stride;
  int bs, topk, n_draft, max_rows, max_cols, mode, page_size, n_dest, binary_search;
};

__device__ __forceinline__ int32_t* dest(const Args& a, int d, int field) {
  return reinterpret_cast<int32_t*>(a.dest_table[d * kFields + field]);
}

// sum_{t=first}^{first+n-1} min(t, topk), exact in int64 (n >= 0)
__device__ __forceinline__ int64_t clamped_run_sum(int64_t first, int64_t n, int64_t topk) {
  const int64_t last = first + n - 1;
  if (last <= topk) return n * (first + last) / 2;
  if (first > topk) return n * topk;
  const int64_t m = topk - first + 1;  // terms <= topk
  return m * (first + topk) / 2 + (n - m) * topk;
}

struct Shared {
  int64_t row_end[kMaxBs];  // inclusive prefix sum of extend rows
  int64_t kv_cum[kMaxBs];   // inclusive prefix sum of kv lengths
  int64_t nsa_cum[kMaxBs];  // inclusive prefix sum of clamped expanded lengths
  int32_t row_req[kRowsPerBlock];
  typename cub::BlockScan<int64_t, kThreads>::TempStorage scan;
};

__device__ __forceinline__ int64_t kv_len(const Args& a, int i) {
  const int64_t s = load(a.seq_lens, i);
  return a.mode == kTargetVerify ? s + a.n_draft : s;
}

__device__ __forceinline__ int64_t ext_len(const Args& a, int i) {
  return a.mode == kDecode ? 1 : (a.mode == kTargetVerify ? a.n_draft : load(a.accept_length, i));
}

__device__ void scan_requests(const Args& a, Shared& sh) {
  using Scan = cub::BlockScan<int64_t, kThreads>;
  int64_t ext[kItems], kv[kItems], nsa[kItems];
  for (int k = 0; k < kItems; ++k) {
    const int i = threadIdx.x * kItems + k;
    ext[k] = kv[k] = nsa[k] = 0;
    if (i < a.bs) {
      ext[k] = ext_len(a, i);
      kv[k] = kv_len(a, i);
      nsa[k] = clamped_run_sum(kv[k] - ext[k] + 1, ext[k], a.topk);
    }
  }
  Scan(sh.scan).InclusiveSum(ext, ext);
  __syncthreads();
  Scan(sh.scan).InclusiveSum(kv, kv);
  __syncthreads();
  Scan(sh.scan).InclusiveSum(nsa, nsa);
  for (int k = 0; k < kItems; ++k) {
    const int i = threadIdx.x * kItems + k;
    if (i < a.bs) {
      sh.row_end[i] = ext[k];
      sh.kv_cum[i] = kv[k];
      sh.nsa_cum[i] = nsa[k];
    }
  }
  __syncthreads();
}

// Request owning row r: first i with row_end[i] > r (bs if none).
__device__ __forceinline__ int find_request(const Args& a, const Shared& sh, int64_t r) {
  if (!a.binary_search) {
    int i = 0;
    while (i < a.bs && sh.row_end[i] <= r) ++i;
    return i;
  }
  int lo = 0, hi = a.bs;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (sh.row_end[mid] <= r) lo = mid + 1; else hi = mid;
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads) fill_replay_metadata_kernel(const Args a) {
  __shared__ Shared sh;
  scan_requests(a, sh);
  const int64_t total_rows = a.bs > 0 ? sh.row_end[a.bs - 1] : 0;

  if (blockIdx.x == 0 && blockIdx.y == 0) {  // per-request fields
    for (int i = threadIdx.x; i < a.bs; i += kThreads) {
      for (int d = 0; d < a.n_dest; ++d) {
        dest(a, d, 0)[i] = static_cast<int32_t>(kv_len(a, i));
        dest(a, d, 1)[1 + i] = static_cast<int32_t>(sh.kv_cum[i]);
      }
    }
  }

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  if (threadIdx.x < kRowsPerBlock) {
    const int64_t r = row0 + threadIdx.x;
    const bool valid = r < total_rows && r < a.max_rows;
    const int i = valid ? find_request(a, sh, r) : -1;
    sh.row_req[threadIdx.x] = i;
    if (valid && blockIdx.y == 0) {  // 1-D metadata of row r
      const int64_t start = i > 0 ? sh.row_end[i - 1] : 0;
      const int64_t e = ext_len(a, i), kv = kv_len(a, i), j = r - start;
      const int64_t expanded = kv - e + 1 + j;
      const int64_t clamped = expanded < a.topk ? expanded : a.topk;
      const int64_t nsa_before = (i > 0 ? sh.nsa_cum[i - 1] : 0);
      const int64_t nsa_cu = nsa_before + clamped_run_sum(kv - e + 1, j + 1, a.topk);
      for (int d = 0; d < a.n_dest; ++d) {
        if (a.mode != kDecode) dest(a, d, 4)[r] = static_cast<int32_t>(expanded);
        dest(a, d, 5)[r] = static_cast<int32_t>(clamped);
        dest(a, d, 6)[1 + r] = static_cast<int32_t>(nsa_cu);
      }
    }
  }
  __syncthreads();

  // Page-table tile: columns [col0, col0 + kColsPerBlock) of each row of this block.
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kColsPerBlock;
  for (int k = 0; k < kRowsPerBlock; ++k) {
    const int i = sh.row_req[k];
    if (i < 0) continue;
    const int64_t r = row0 + k;
    int64_t limit = kv_len(a, i);
    limit = limit < a.max_cols ? limit : a.max_cols;
    limit = limit < a.req_to_token_cols ? limit : a.req_to_token_cols;
    if (col0 >= limit) continue;
    const int64_t req = load(a.req_pool_indices, i);
    const bool in_pool = req >= 0 && req < a.pool_rows;  // else: padding slot 0, no read
    const int32_t* src = a.req_to_token + (in_pool ? req : 0) * a.req_to_token_stride0;
    for (int64_t c = col0 + threadIdx.x; c < col0 + kColsPerBlock && c < limit; c += kThreads) {
      const int32_t v = in_pool ? src[c * a.req_to_token_stride1] : 0;
      for (int d = 0; d < a.n_dest; ++d) {
        dest(a, d, 2)[r * a.page_table_stride + c] = v;
        if (a.page_size > 1 && c % a.page_size == 0) {
          dest(a, d, 3)[r * a.real_page_table_stride + c / a.page_size] = v / a.page_size;
        }
      }
    }
  }
}

// The DeepGEMM schedule computed once, copied into every step backend's captured buffer.
struct ScheduleDests {
  int32_t* ptr[kMaxScheduleDests];
  int n;
};

__global__ void copy_schedule_kernel(const int32_t* src, int64_t numel, ScheduleDests dests) {
  for (int64_t k = blockIdx.x * blockDim.x + threadIdx.x; k < numel;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t v = src[k];
    for (int d = 0; d < dests.n; ++d) dests.ptr[d][k] = v;
  }
}

__global__ void empty_kernel() {}

// Host launcher on raw pointers: returns cudaError_t of the launch.
int launch_fill_replay_metadata(const Args& a, cudaStream_t stream) {
  if (a.bs <= 0) return 0;
  if (a.bs > kMaxBs) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid((a.max_rows + kRowsPerBlock - 1) / kRowsPerBlock,
                  (a.max_cols + kColsPerBlock - 1) / kColsPerBlock);
  fill_replay_metadata_kernel<<<grid, kThreads, 0, stream>>>(a);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace nsa_fastpath

// ---------------------------------------------------------------------------------------------
// Host side, through apache-tvm-ffi (SGLang's own JIT-kernel mechanism): tensors arrive as DLPack
// TensorViews, errors leave as Python TypeError / ValueError / RuntimeError, the stream is the
// caller's current one (tvm-ffi takes it from the first CUDA tensor argument). No torch header:
// the library does not depend on the torch it runs with.
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/optional.h>

#include <string>

namespace {

namespace nf = nsa_fastpath;
using tvm::ffi::Optional;
using tvm::ffi::TensorView;

// A plan: everything of one captured (backend set, bs, mode) that does not change between replays,
// as int64 words of a CPU tensor that cuda_metadata_wrapper.FillPlan allocates (plan_words()) and
// init_plan / add_schedule fill at capture time. A replay then passes the plan and its three inputs.
enum PlanWord : int {
  kMagic, kDevice, kReqToToken, kR2TStride0, kR2TStride1, kPoolRows, kR2TCols, kDestTable, kNDest,
  kPageTableStride, kRealPageTableStride, kBs, kTopk, kNDraft, kMaxRows, kMaxCols, kModeWord,
  kPageSize, kBinarySearch, kScheduleNumel, kNSchedules, kSchedules,
  kPlanWords = kSchedules + nf::kMaxScheduleDests
};
constexpr int64_t kPlanMagic = 0x4e53414d45544131;  // "NSAMETA1": this layout

bool is_int(const TensorView& t, int bits) {
  return t.dtype().code == kDLInt && t.dtype().bits == bits && t.dtype().lanes == 1;
}

// The first element's address (DLPack allows a byte offset; torch passes 0).
void* addr(const TensorView& t) { return static_cast<char*>(t.data_ptr()) + t.byte_offset(); }

bool on_device(const TensorView& t, int64_t device) {
  return t.device().device_type == kDLCUDA && t.device().device_id == device;
}

int64_t* plan_of(const TensorView& plan, bool initialized = true) {
  if (plan.device().device_type != kDLCPU || !is_int(plan, 64) || plan.ndim() != 1 ||
      plan.size(0) != kPlanWords || !plan.IsContiguous()) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: a plan is a contiguous CPU int64 tensor of "
                              << kPlanWords << " words (plan_words())";
  }
  int64_t* w = static_cast<int64_t*>(addr(plan));
  if (initialized && w[kMagic] != kPlanMagic) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: plan not initialized by init_plan";
  }
  return w;
}

cudaStream_t stream_of(const int64_t* w) {
  return static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, static_cast<int32_t>(w[kDevice])));
}

// A replay input: int32 or int64 (TypeError otherwise, naming it), 1-D with at least bs entries,
// on the plan's GPU (ValueError otherwise); any stride.
nf::IndexArray index_array(const TensorView& t, const char* name, int64_t bs, int64_t device) {
  if (!is_int(t, 32) && !is_int(t, 64)) {
    TVM_FFI_THROW(TypeError) << "nsa-fastpath: " << name << " must be int32 or int64, got "
                             << t.dtype();
  }
  if (t.ndim() != 1 || t.size(0) < bs) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: " << name << " holds "
                              << (t.ndim() == 1 ? t.size(0) : -1)
                              << " entries (1-D expected), fewer than bs=" << bs;
  }
  if (!on_device(t, device)) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: " << name << " must be on the backend's GPU (cuda:"
                              << device << ")";
  }
  return {addr(t), t.stride(0), is_int(t, 64) ? 1 : 0};
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    TVM_FFI_THROW(RuntimeError) << "nsa-fastpath: " << what << " launch failed: "
                                << cudaGetErrorString(err);
  }
}

int64_t plan_words() { return kPlanWords; }
int64_t max_bs() { return nf::kMaxBs; }
int64_t max_schedule_dests() { return nf::kMaxScheduleDests; }

// At capture time: the plan of one captured bs (the buffers must outlive it: the wrapper keeps them).
void init_plan(TensorView plan, TensorView req_to_token, TensorView dest_table, int64_t mode,
               int64_t n_draft, int64_t topk, int64_t page_size, int64_t bs, int64_t max_rows,
               int64_t max_cols, int64_t page_table_stride, int64_t real_page_table_stride,
               bool binary_search) {
  int64_t* w = plan_of(plan, /*initialized=*/false);
  if (req_to_token.device().device_type != kDLCUDA || !is_int(req_to_token, 32) ||
      req_to_token.ndim() != 2) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: req_to_token must be a 2-D CUDA int32 tensor";
  }
  const int64_t device = req_to_token.device().device_id;
  if (!on_device(dest_table, device) || !is_int(dest_table, 64) || dest_table.ndim() != 2 ||
      dest_table.size(1) != nf::kFields || !dest_table.IsContiguous()) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: dest_table must be [n_dest, 7] int64 on req_to_token's GPU";
  }
  if (bs > nf::kMaxBs) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: bs " << bs << " above the CUDA kernel's limit " << nf::kMaxBs;
  }
  if (mode < nf::kDecode || mode > nf::kDraftExtend) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: unknown mode " << mode;
  }
  for (int k = 0; k < kPlanWords; ++k) w[k] = 0;
  w[kDevice] = device;
  w[kReqToToken] = reinterpret_cast<int64_t>(addr(req_to_token));
  w[kR2TStride0] = req_to_token.stride(0);
  w[kR2TStride1] = req_to_token.stride(1);
  w[kPoolRows] = req_to_token.size(0);
  w[kR2TCols] = req_to_token.size(1);
  w[kDestTable] = reinterpret_cast<int64_t>(addr(dest_table));
  w[kNDest] = dest_table.size(0);
  w[kPageTableStride] = page_table_stride;
  w[kRealPageTableStride] = real_page_table_stride;
  w[kBs] = bs;
  w[kTopk] = topk;
  w[kNDraft] = n_draft;
  w[kMaxRows] = max_rows;
  w[kMaxCols] = max_cols;
  w[kModeWord] = mode;
  w[kPageSize] = page_size;
  w[kBinarySearch] = binary_search ? 1 : 0;
  w[kMagic] = kPlanMagic;
}

// At capture time: one more captured DeepGEMM schedule buffer that copy_schedule refreshes.
void add_schedule(TensorView plan, TensorView schedule) {
  int64_t* w = plan_of(plan);
  if (w[kNSchedules] >= nf::kMaxScheduleDests) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: more than " << nf::kMaxScheduleDests << " schedule buffers";
  }
  if (!on_device(schedule, w[kDevice]) || !is_int(schedule, 32) || !schedule.IsContiguous() ||
      (w[kNSchedules] > 0 && schedule.numel() != w[kScheduleNumel])) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: schedule buffers must be contiguous int32 of one shape";
  }
  w[kScheduleNumel] = schedule.numel();
  w[kSchedules + w[kNSchedules]++] = reinterpret_cast<int64_t>(addr(schedule));
}

nf::Args args_of(const int64_t* w) {
  nf::Args a{};
  a.req_to_token = reinterpret_cast<const int32_t*>(w[kReqToToken]);
  a.req_to_token_stride0 = w[kR2TStride0];
  a.req_to_token_stride1 = w[kR2TStride1];
  a.pool_rows = w[kPoolRows];
  a.req_to_token_cols = w[kR2TCols];
  a.dest_table = reinterpret_cast<const int64_t*>(w[kDestTable]);
  a.page_table_stride = w[kPageTableStride];
  a.real_page_table_stride = w[kRealPageTableStride];
  a.bs = static_cast<int>(w[kBs]);
  a.topk = static_cast<int>(w[kTopk]);
  a.n_draft = static_cast<int>(w[kNDraft]);
  a.max_rows = static_cast<int>(w[kMaxRows]);
  a.max_cols = static_cast<int>(w[kMaxCols]);
  a.mode = static_cast<int>(w[kModeWord]);
  a.page_size = static_cast<int>(w[kPageSize]);
  a.n_dest = static_cast<int>(w[kNDest]);
  a.binary_search = static_cast<int>(w[kBinarySearch]);
  return a;
}

nf::ScheduleDests schedule_dests_of(const int64_t* w) {
  nf::ScheduleDests d{};
  d.n = static_cast<int>(w[kNSchedules]);
  for (int k = 0; k < d.n; ++k) d.ptr[k] = reinterpret_cast<int32_t*>(w[kSchedules + k]);
  return d;
}

// One replay: one launch on the current stream, no host sync. Inputs are checked before it.
void fill(TensorView plan, TensorView req_pool_indices, TensorView seq_lens,
          Optional<TensorView> accept_length) {
  const int64_t* w = plan_of(plan);
  nf::Args a = args_of(w);
  a.req_pool_indices = index_array(req_pool_indices, "req_pool_indices", a.bs, w[kDevice]);
  a.seq_lens = index_array(seq_lens, "seq_lens", a.bs, w[kDevice]);
  if (a.mode == nf::kDraftExtend) {
    if (!accept_length.has_value()) {
      TVM_FFI_THROW(ValueError) << "nsa-fastpath: draft_extend needs spec_info.accept_length";
    }
    a.accept_length = index_array(accept_length.value(), "accept_length", a.bs, w[kDevice]);
  }
  const int err = nf::launch_fill_replay_metadata(a, stream_of(w));
  if (err != 0) {
    TVM_FFI_THROW(RuntimeError) << "nsa-fastpath: fill_replay_metadata launch failed: "
                                << cudaGetErrorString(static_cast<cudaError_t>(err));
  }
}

// Both kernels launched once with nothing to do (no request, no element), so that their lazy
// module load happens at capture time rather than on the first replay. `on` (any tensor on the
// plan's GPU) makes tvm-ffi pass the caller's stream.
void warm(TensorView plan, TensorView on) {
  const int64_t* w = plan_of(plan);
  nf::Args a = args_of(w);
  a.bs = 0;
  const cudaStream_t stream = stream_of(w);
  nf::fill_replay_metadata_kernel<<<1, nf::kThreads, 0, stream>>>(a);
  nf::copy_schedule_kernel<<<1, 256, 0, stream>>>(nullptr, 0, schedule_dests_of(w));
  check_launch("warm-up");
}

// The fresh DeepGEMM schedule into every captured schedule buffer, one launch.
void copy_schedule(TensorView plan, TensorView src) {
  const int64_t* w = plan_of(plan);
  if (!on_device(src, w[kDevice]) || !is_int(src, 32) || !src.IsContiguous() ||
      w[kNSchedules] == 0 || src.numel() != w[kScheduleNumel]) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: DeepGEMM schedule shape/dtype differs from the captured one";
  }
  const int64_t numel = src.numel();
  const int64_t blocks = (numel + 255) / 256 < 64 ? (numel + 255) / 256 : 64;
  nf::copy_schedule_kernel<<<blocks > 0 ? blocks : 1, 256, 0, stream_of(w)>>>(
      static_cast<const int32_t*>(addr(src)), numel, schedule_dests_of(w));
  check_launch("copy_schedule");
}

// Benchmark floor: a call through tvm-ffi with one tensor (for its stream) and an empty launch.
void empty_launch(TensorView on) {
  nf::empty_kernel<<<1, 1, 0, static_cast<cudaStream_t>(
      TVMFFIEnvGetStream(kDLCUDA, on.device().device_id))>>>();
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(plan_words, plan_words);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(max_bs, max_bs);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(max_schedule_dests, max_schedule_dests);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(init_plan, init_plan);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(add_schedule, add_schedule);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(fill, fill);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(warm, warm);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(copy_schedule, copy_schedule);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(empty_launch, empty_launch);
