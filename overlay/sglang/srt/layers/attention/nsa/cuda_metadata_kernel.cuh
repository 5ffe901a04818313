// Copyright 2026 nsa-fastpath authors. Licensed under the Apache License, Version 2.0.
//
// nsa-fastpath: what the CUDA metadata kernel (cuda_metadata_kernel.cu, compiled by nvcc) and its
// tvm-ffi binding (cuda_metadata_binding.cc, compiled by the host C++ compiler) share: limits,
// the kernel's arguments and the host launchers, on raw pointers and a stream. Two translation
// units because nvcc compiling the tvm-ffi headers doubled the build; apart, they compile at once.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

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

struct Args {
  const int32_t* req_to_token;
  int64_t req_to_token_stride0, req_to_token_stride1, pool_rows, req_to_token_cols;
  IndexArray req_pool_indices, seq_lens, accept_length;
  const int64_t* dest_table;
  int64_t page_table_stride;
  int64_t real_page_table_stride;
  int bs, topk, n_draft, max_rows, max_cols, mode, page_size, n_dest, binary_search;
};

// The DeepGEMM schedule computed once, copied into every step backend's captured buffer.
struct ScheduleDests {
  int32_t* ptr[kMaxScheduleDests];
  int n;
};

// Host launchers (cuda_metadata_kernel.cu): each returns the launch's cudaError_t as an int.
int launch_fill_replay_metadata(const Args& a, cudaStream_t stream);
// Both kernels with nothing to do (no request, no element): their lazy module load, now.
int launch_warm(const Args& a, const ScheduleDests& dests, cudaStream_t stream);
int launch_copy_schedule(const int32_t* src, int64_t numel, const ScheduleDests& dests,
                         cudaStream_t stream);
// Benchmark floor: an empty kernel, no error check.
void launch_empty(cudaStream_t stream);

}  // namespace nsa_fastpath
