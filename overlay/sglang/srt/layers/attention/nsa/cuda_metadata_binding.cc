// Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
//
// nsa-fastpath: the host side of the CUDA metadata kernel (cuda_metadata_kernel.cu), through
// apache-tvm-ffi (SGLang's own JIT-kernel mechanism): tensors arrive as DLPack TensorViews, errors
// leave as Python TypeError / ValueError / RuntimeError, the stream is the caller's current one
// (tvm-ffi takes it from the first CUDA tensor argument). No torch header: the library does not
// depend on the torch it runs with. Compiled by the host C++ compiler, not nvcc: the tvm-ffi
// headers doubled nvcc's work, and the two files now compile at once.
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/optional.h>

#include <string>

#include "cuda_metadata_kernel.cuh"
#include "nsa_fastpath_build_key.h"  // generated into the build directory by the wrapper

// What this library is built from (our sources' sha256, the tvm-ffi release, the flags), in its
// bytes: cuda_metadata_wrapper reads it from the file before loading it, with no nvcc.
extern "C" __attribute__((used, visibility("default")))
const char nsa_fastpath_build_key[] = NSA_FASTPATH_BUILD_KEY;

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

void check_launch(int err, const char* what) {
  if (err != 0) {
    TVM_FFI_THROW(RuntimeError) << "nsa-fastpath: " << what << " launch failed: "
                                << cudaGetErrorString(static_cast<cudaError_t>(err));
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
  check_launch(nf::launch_fill_replay_metadata(a, stream_of(w)), "fill_replay_metadata");
}

// Both kernels launched once with nothing to do (no request, no element), so that their lazy
// module load happens at capture time rather than on the first replay. `on` (any tensor on the
// plan's GPU) makes tvm-ffi pass the caller's stream.
void warm(TensorView plan, TensorView on) {
  const int64_t* w = plan_of(plan);
  check_launch(nf::launch_warm(args_of(w), schedule_dests_of(w), stream_of(w)), "warm-up");
}

// The fresh DeepGEMM schedule into every captured schedule buffer, one launch.
void copy_schedule(TensorView plan, TensorView src) {
  const int64_t* w = plan_of(plan);
  if (!on_device(src, w[kDevice]) || !is_int(src, 32) || !src.IsContiguous() ||
      w[kNSchedules] == 0 || src.numel() != w[kScheduleNumel]) {
    TVM_FFI_THROW(ValueError) << "nsa-fastpath: DeepGEMM schedule shape/dtype differs from the captured one";
  }
  check_launch(nf::launch_copy_schedule(static_cast<const int32_t*>(addr(src)), src.numel(),
                                        schedule_dests_of(w), stream_of(w)),
               "copy_schedule");
}

// Benchmark floor: a call through tvm-ffi with one tensor (for its stream) and an empty launch.
void empty_launch(TensorView on) {
  nf::launch_empty(static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, on.device().device_id)));
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
