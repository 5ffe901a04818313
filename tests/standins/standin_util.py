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


class _AnyDecorator(_Anything):
    """Any name of a DSL whose decorators run at import (`@cute.jit`, `@cute.jit(...)`): applied
    to a function or class it gives a raising stand-in of that function; any other call gives
    another _AnyDecorator (a decorator factory's result, a DSL type's instance), which raises
    only when it is called with values. Subscripted (`cute.Tensor[...]`), it is itself."""

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]) \
                and not isinstance(args[0], _Anything):
            fn = args[0]
            return raising(f"{self._qualname}({getattr(fn, '__qualname__', fn)})")
        if not args:
            return _AnyDecorator(f"{self._qualname}(...)")
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyDecorator(f"{self._qualname}.{name}")

    def __getitem__(self, key):
        return self


def _any_type(qualname: str) -> type:
    """Any name of a module whose names other code may test with isinstance (cuda-python's
    `driver.CUstream`, which apache-tvm-ffi checks arguments against): an empty class, nothing
    is an instance of it; making one raises."""
    def __new__(cls, *args, **kwargs):
        raising(qualname)()

    return type(qualname.rsplit(".", 1)[-1], (), {"__new__": __new__, "__qualname__": qualname})


class _AnyNameModule(types.ModuleType):
    _kind = _Anything

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(self)._kind(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _AnyDecoratorModule(_AnyNameModule):
    _kind = _AnyDecorator


class _AnyTypeModule(_AnyNameModule):
    """Names in lower case are submodules (`cuda.bindings.driver`, also when reached as
    `from cuda.bindings import driver`), the others empty classes (`driver.CUstream`)."""
    _kind = staticmethod(_any_type)

    def __getattr__(self, name):
        if name[:1].islower():
            import importlib

            return importlib.import_module(f"{self.__name__}.{name}")
        return super().__getattr__(name)


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates any `<package>.x.y` submodule on import, as an _AnyNameModule package."""

    def __init__(self, package, module_class=_AnyNameModule):
        self._prefix = package + "."
        self._module_class = module_class

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith(self._prefix):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = self._module_class(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def any_name_package(name: str, decorators: bool = False, types_only: bool = False) -> None:
    """Make stand-in package `name` resolve any attribute and any submodule to raising stand-ins
    (`decorators`: ones that also decorate at import, _AnyDecorator; `types_only`: empty classes,
    _any_type)."""
    module_class = (_AnyDecoratorModule if decorators else
                    _AnyTypeModule if types_only else _AnyNameModule)
    sys.meta_path.insert(0, _SubmoduleFinder(name, module_class))
    sys.modules[name].__class__ = module_class
