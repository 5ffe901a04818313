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
// The tvm-ffi host side (checks, plans, exports) is cuda_metadata_binding.cc, kept out of nvcc.
#include <cub/block/block_scan.cuh>

#include "cuda_metadata_kernel.cuh"

namespace nsa_fastpath {

__device__ __forceinline__ int64_t load(const IndexArray& a, int64_t i) {
  return a.is64 ? static_cast<const int64_t*>(a.ptr)[i * a.stride]
                : static_cast<const int32_t*>(a.ptr)[i * a.stride];
}

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

__global__ void copy_schedule_kernel(const int32_t* src, int64_t numel, ScheduleDests dests) {
  for (int64_t k = blockIdx.x * blockDim.x + threadIdx.x; k < numel;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t v = src[k];
    for (int d = 0; d < dests.n; ++d) dests.ptr[d][k] = v;
  }
}

__global__ void empty_kernel() {}

// Host launchers on raw pointers (declared in cuda_metadata_kernel.cuh).
int launch_fill_replay_metadata(const Args& a, cudaStream_t stream) {
  if (a.bs <= 0) return 0;
  if (a.bs > kMaxBs) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid((a.max_rows + kRowsPerBlock - 1) / kRowsPerBlock,
                  (a.max_cols + kColsPerBlock - 1) / kColsPerBlock);
  fill_replay_metadata_kernel<<<grid, kThreads, 0, stream>>>(a);
  return static_cast<int>(cudaGetLastError());
}

int launch_warm(const Args& a, const ScheduleDests& dests, cudaStream_t stream) {
  Args none = a;
  none.bs = 0;
  fill_replay_metadata_kernel<<<1, kThreads, 0, stream>>>(none);
  copy_schedule_kernel<<<1, 256, 0, stream>>>(nullptr, 0, dests);
  return static_cast<int>(cudaGetLastError());
}

int launch_copy_schedule(const int32_t* src, int64_t numel, const ScheduleDests& dests,
                         cudaStream_t stream) {
  const int64_t blocks = (numel + 255) / 256 < 64 ? (numel + 255) / 256 : 64;
  copy_schedule_kernel<<<blocks > 0 ? blocks : 1, 256, 0, stream>>>(src, numel, dests);
  return static_cast<int>(cudaGetLastError());
}

void launch_empty(cudaStream_t stream) { empty_kernel<<<1, 1, 0, stream>>>(); }

}  // namespace nsa_fastpath
