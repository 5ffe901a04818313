"""CPU-tier stand-in for torchvision: PyPI's CUDA torchvision fails beside a CPU torch.

SGLang 0.5.8 imports `torchvision.transforms` and `InterpolationMode` at module level through
`srt/configs` -> `multimodal/internvl_utils.py`; nothing on the tested paths uses them.
"""
