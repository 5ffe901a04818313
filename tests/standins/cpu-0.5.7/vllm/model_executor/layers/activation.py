"""The two names SGLang 0.5.7's layers/activation.py imports; constructing either raises."""
from standin_util import raising


class SiluAndMul:
    __init__ = raising("vllm.model_executor.layers.activation.SiluAndMul")


class GeluAndMul:
    __init__ = raising("vllm.model_executor.layers.activation.GeluAndMul")
