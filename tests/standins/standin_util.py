"""Shared helper for the test-only stand-in modules (see tests/README.md).

Every callable a stand-in exports raises when called: the metadata and radix-cache code paths the
harness exercises never call them, so a call means the harness left the path it claims to test.
"""
import importlib.abc
import importlib.machinery
import sys
import types


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


class _Anything:
    """Any name: raises when called; its attributes are _Anything too (e.g. `scalar_types.uint4b8`
    that SGLang reads at import time)."""

    def __init__(self, qualname):
        self._qualname = qualname
        self._call = raising(qualname)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self._qualname}.{name}")

    def __repr__(self):
        return f"<stand-in {self._qualname}>"

    def __mro_entries__(self, bases):
        """Subclassed at import time (0.5.9: `class TorchDistributedCommBackend(CommBackend)`):
        the base is an empty class of that name."""
        return (type(self._qualname.rsplit(".", 1)[-1], (), {}),)


class _AnyNameModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Anything(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates any `<package>.x.y` submodule on import, as an _AnyNameModule package."""

    def __init__(self, package):
        self._prefix = package + "."

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith(self._prefix):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _AnyNameModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def any_name_package(name: str) -> None:
    """Make stand-in package `name` resolve any attribute and any submodule to raising stand-ins."""
    sys.meta_path.insert(0, _SubmoduleFinder(name))
    sys.modules[name].__class__ = _AnyNameModule
