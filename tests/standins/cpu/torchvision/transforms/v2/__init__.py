"""Stand-in: `torchvision.transforms.v2.functional`, bound as a module at import by transformers 5
(`image_processing_utils.py`, `image_processing_backends.py`); nothing reads its names."""
