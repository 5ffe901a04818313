"""Stand-in for NVIDIA's CuTe DSL (`cutlass`, pip nvidia-cutlass-dsl), where it is not installed.

From SGLang 0.5.15 the DSA backend's import chain reaches `sglang.jit_kernel.dsa`, which imports
its Blackwell (SM100) CuTe DSL paged-MQA-logits kernel at module level: `import cutlass`, its
submodules, and the DSL's decorators (`@cute.jit`, `@cute.kernel`, `@dsl_user_op`) applied at
import. The replay-metadata paths never run that kernel. So any name and any submodule is a
stand-in; used as a decorator it gives a function that raises when called, and any other call
raises (harness/releases.py `standin_dirs` puts it on the path only where `cutlass` is missing).
"""
from standin_util import any_name_package

any_name_package(__name__, decorators=True)
