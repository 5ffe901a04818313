// GPU-tier stand-in for DeepGEMM's get_paged_mqa_logits_metadata (see __init__.py): one block,
// one launch. For SM s in [0, num_sms]: target block t = total_blocks * s / num_sms; out[s] =
// (request index owning block t, t - first block of that request), blocks of block_kv tokens.
#include <cstdint>
#include <cuda_runtime.h>

__global__ void schedule_kernel(const int32_t* seqlens, int n, int block_kv, int num_sms,
                                int32_t* out) {
  extern __shared__ int64_t ends[];  // inclusive prefix sum of blocks per request
  if (threadIdx.x == 0) {
    int64_t acc = 0;
    for (int i = 0; i < n; ++i) {
      const int64_t len = seqlens[i] > 0 ? seqlens[i] : 0;
      acc += (len + block_kv - 1) / block_kv;
      ends[i] = acc;
    }
  }
  __syncthreads();
  const int64_t total = n > 0 ? ends[n - 1] : 0;
  for (int s = threadIdx.x; s <= num_sms; s += blockDim.x) {
    const int64_t target = total * s / num_sms;
    int req = 0;  // requests whose blocks end at or before target
    while (req < n && ends[req] <= target) ++req;
    const int64_t start = req == 0 ? 0 : ends[req - 1];
    out[2 * s] = req;
    out[2 * s + 1] = static_cast<int32_t>(target - start);
  }
}

extern "C" int paged_mqa_schedule(const int32_t* seqlens, int n, int block_kv, int num_sms,
                                  int32_t* out, cudaStream_t stream) {
  schedule_kernel<<<1, 256, (n > 0 ? n : 1) * sizeof(int64_t), stream>>>(seqlens, n, block_kv,
                                                                          num_sms, out);
  return static_cast<int>(cudaGetLastError());
}
