"""Shared helper for the test-only stand-in modules (see tests/README.md).

Every callable a stand-in exports raises when called: the metadata and radix-cache code paths the
harness exercises never call them, so a call means the harness left the path it claims to test.
"""


def raising(qualname: str):
    def _standin(*args, **kwargs):
        raise RuntimeError(
            f"{qualname} is a test stand-in (tests/standins); the real kernel is not available "
            "here and the code under test was not expected to call it"
        )

    _standin.__name__ = qualname.rsplit(".", 1)[-1]
    _standin.__qualname__ = qualname
    return _standin


def export(module_globals: dict, module_name: str, names):
    """Define each of `names` in the module as a raising stand-in."""
    for name in names:
        module_globals[name] = raising(f"{module_name}.{name}")
