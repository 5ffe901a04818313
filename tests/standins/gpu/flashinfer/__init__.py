"""GPU-tier stand-in for flashinfer, which the GPU machine's image lacks.

On CUDA, SGLang 0.5.9's `sglang.srt.layers.rotary_embedding` imports `sglang.jit_kernel.rope`,
which imports flashinfer at module level only to find its headers when that rope kernel is
compiled. The NSA backend reaches that module through `nsa_indexer`; the replay-metadata paths
and RadixCache never call flashinfer (its other uses in 0.5.9 are imports inside functions), so
any attribute is a callable that raises when called: a call means the harness left those paths.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def _not_in_the_harness(*args, **kwargs):
        raise RuntimeError(f"flashinfer.{name} called: the harness stand-in has no kernels")

    return _not_in_the_harness
