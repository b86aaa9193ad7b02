"""The app loader: "module:attr" (or a factory) to an app, and which interface that app speaks.

The server has two gateways, ASGI 3 and WSGI, so this module hands them exactly those two kinds: ASGI 2
apps are wrapped as ASGI 3 here and nowhere else. Detection reads signatures and never calls the app,
because calling user code to find out what it is would have side effects. Every failure is an
:class:`~bascule.errors.AppLoadError` whose first line says what is wrong and what to do; import and
factory failures add a short tail of the user's own frames, because "importing 'main' failed" alone does
not say where.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import pkgutil
import sys
import sysconfig
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal

from bascule.config import INTERFACES, did_you_mean
from bascule.errors import AppLoadError

__all__ = ["Interface", "LoadedApp", "classify", "import_from_string", "load_app"]

Interface = Literal["asgi3", "wsgi"]
_Kind = Literal["asgi3", "asgi2", "wsgi"]
ASGI3App = Callable[[Any, Any, Any], Awaitable[None]]

_KIND_NAMES: dict[_Kind, str] = {"asgi3": "ASGI 3", "asgi2": "ASGI 2", "wsgi": "WSGI"}
_FORCED: dict[str, _Kind] = {"asgi3": "asgi3", "asgi2": "asgi2", "wsgi": "wsgi"}
_TAIL_FRAMES = 3  # enough to show the user's import chain without turning the error into a traceback
_SPEC_FORM = "must look like MODULE:ATTR, for example main:app"

_log = logging.getLogger("bascule.error")


@dataclass(frozen=True, slots=True)
class LoadedApp:
    """An app ready for a gateway: ``app`` speaks ``interface``; ``label`` names it in log lines."""

    app: Any
    interface: Interface
    label: str


def load_app(spec: str, *, factory: bool = False, app_dir: str = ".", interface: str = "auto") -> LoadedApp:
    """Import ``spec``, call it first when it is a ``factory``, and classify what comes out."""
    _check_interface(interface)  # before importing: a typo should not cost an import with side effects
    target = import_from_string(spec, app_dir=app_dir)
    if factory:
        target = _call_factory(target, spec, Path(app_dir).resolve())
    return classify(target, interface, label=spec)


def import_from_string(spec: str, *, app_dir: str = ".") -> Any:
    """The object named by ``MODULE:ATTR`` (ATTR may be dotted), with ``app_dir`` first on sys.path."""
    module_name, attr_path = _split_spec(spec)
    directory = _put_first_on_path(app_dir)
    module = _import_module(module_name, directory)
    return _get_attribute(module, module_name, attr_path.split("."), directory)


def classify(app: Any, interface: str = "auto", *, label: str = "app") -> LoadedApp:
    """Decide (or take the forced ``interface``) what ``app`` speaks; ASGI 2 comes back wrapped as ASGI 3.

    ``label`` names the app in error messages and becomes the LoadedApp's label with the kind appended.
    """
    _check_interface(interface)
    if not callable(app):
        raise AppLoadError(f"{label!r} is not callable (it is {_a(app)})")
    kind = _FORCED.get(interface) or _detect(app, label)
    full_label = f"{label} ({_KIND_NAMES[kind]})"
    if kind == "asgi2":
        return LoadedApp(_asgi2_to_asgi3(app), "asgi3", full_label)
    return LoadedApp(app, kind, full_label)


# --- import -------------------------------------------------------------------------------------------


def _check_interface(interface: str) -> None:
    if interface not in INTERFACES:
        raise AppLoadError(
            f"interface must be one of {', '.join(INTERFACES)}; got {interface!r}"
            f"{did_you_mean(interface, INTERFACES)}"
        )


def _split_spec(spec: str) -> tuple[str, str]:
    module_name, sep, attr_path = spec.partition(":")
    if attr_path.endswith("()"):
        raise AppLoadError(f"app {spec!r} {_SPEC_FORM}; to call a factory, drop the () and pass --factory")
    if not sep or not all(module_name.split(".")) or not all(attr_path.split(".")) or ":" in attr_path:
        raise AppLoadError(f"app {spec!r} {_SPEC_FORM}")
    return module_name, attr_path


def _put_first_on_path(app_dir: str) -> Path:
    """Put ``app_dir`` (absolute) at the front of sys.path exactly once, as `python main.py` would."""
    directory = Path(app_dir).resolve()
    if not directory.is_dir():
        raise AppLoadError(f"app directory {app_dir!r} does not exist; pass an existing directory as --app-dir")
    entry = str(directory)
    if sys.path[:1] != [entry]:
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    return directory


def _import_module(name: str, directory: Path) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            raise AppLoadError(_not_found(missing, directory)) from None
        # The user's module exists but imports something that does not: point at their import line.
        raise AppLoadError(_with_tail(f"importing {name!r} failed: {exc}", exc, directory)) from exc
    except (Exception, SystemExit) as exc:  # SystemExit too: a module calling sys.exit() must not end us quietly
        raise AppLoadError(
            _with_tail(f"importing {name!r} failed: {_describe(exc, directory)}", exc, directory)
        ) from exc


def _not_found(missing: str, directory: Path) -> str:
    parent, _, leaf = missing.rpartition(".")
    if parent:
        paths = getattr(sys.modules.get(parent), "__path__", None)
        names = [f"{parent}.{m.name}" for m in pkgutil.iter_modules(paths)] if paths is not None else []
        if paths is None and parent in sys.modules:
            fallback = f": {parent!r} is a module, not a package, so it has no submodule {leaf!r}"
        else:
            fallback = f": package {parent!r} has no module {leaf!r}"
    else:
        names = [m.name for m in pkgutil.iter_modules([str(directory)])]
        fallback = f": no {missing}.py or {missing}/ package in {directory} or on sys.path; check --app-dir"
    return f"cannot import module {missing!r}{did_you_mean(missing, names) or fallback}"


def _get_attribute(module: ModuleType, module_name: str, parts: list[str], directory: Path) -> Any:
    obj: Any = module
    owner = f"module {module_name!r}"
    for depth, part in enumerate(parts, start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            hint = did_you_mean(part, _public_names(obj))
            raise AppLoadError(f"{owner} has no attribute {part!r}{hint}") from None
        except Exception as exc:  # a property or module __getattr__ that fails for another reason
            path = f"{module_name}:{'.'.join(parts[:depth])}"
            raise AppLoadError(f"getting {path!r} failed: {_describe(exc, directory)}") from exc
        owner = repr(f"{module_name}:{'.'.join(parts[:depth])}")
    return obj


def _public_names(obj: object) -> list[str]:
    try:
        return [name for name in dir(obj) if not name.startswith("_")]
    except Exception:
        return []


def _call_factory(factory: Any, spec: str, directory: Path) -> Any:
    if not callable(factory):
        raise AppLoadError(
            f"{spec!r} is not callable (it is {_a(factory)}); --factory needs a function that returns the app"
        )
    try:
        app = factory()
    except (Exception, SystemExit) as exc:
        raise AppLoadError(
            _with_tail(f"calling factory {spec!r} failed: {_describe(exc, directory)}", exc, directory)
        ) from exc
    if inspect.isawaitable(app):
        if inspect.iscoroutine(app):
            app.close()  # never awaited on purpose; closing avoids a RuntimeWarning about it
        raise AppLoadError(f"factory {spec!r} is async; --factory needs a plain function that returns the app")
    if not callable(app):
        raise AppLoadError(f"factory {spec!r} returned {_a(app)}, which is not callable; it must return the app")
    return app


# --- error text ---------------------------------------------------------------------------------------


def _a(obj: object) -> str:
    """'a dict', 'an int', 'None': what the object is, for messages."""
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _describe(exc: BaseException, directory: Path) -> str:
    """'ExcType: message', with file and line for a SyntaxError (its frames do not include the bad file)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({_display(exc.filename, directory)}, line {exc.lineno})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _with_tail(first_line: str, exc: BaseException, directory: Path) -> str:
    """The message plus the last few frames that are the user's code, one compact line each."""
    return "\n".join([first_line, *_user_frames(exc.__traceback__, directory)])


def _user_frames(tb: TracebackType | None, directory: Path) -> list[str]:
    frames = [f for f in traceback.extract_tb(tb) if not _is_machinery(f.filename)]
    mine = [f for f in frames if not _is_library(f.filename) or _is_under(f.filename, directory)]
    return [
        f'  File "{_display(f.filename, directory)}", line {f.lineno}, in {f.name}'
        for f in (mine or frames)[-_TAIL_FRAMES:]
    ]


def _is_machinery(filename: str) -> bool:
    """Frames of the import system and of this loader: true of every import, so they say nothing."""
    if filename.startswith("<frozen ") or filename == __file__:
        return True
    return _is_under(filename, Path(importlib.__file__).parent)


def _is_library(filename: str) -> bool:
    return any(_is_under(filename, root) for root in _library_roots())


@functools.cache
def _library_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(dict.fromkeys(Path(paths[n]).resolve() for n in names if n in paths))


def _is_under(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _display(filename: str, directory: Path) -> str:
    """The file as the user knows it: relative to the app directory when it is inside it."""
    try:
        return str(Path(filename).resolve().relative_to(directory))
    except (OSError, ValueError):
        return filename


def _cannot_tell(label: str, why: str) -> AppLoadError:
    return AppLoadError(
        f"cannot tell whether {label!r} is ASGI or WSGI ({why}); pass --interface asgi3|asgi2|wsgi"
    )


# --- interface detection ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    """How many positional arguments a callable takes; ``text`` is its signature for messages."""

    required: int
    maximum: int  # sys.maxsize with *args
    named: int  # positional parameters that have names (a bare `*args, **kwargs` has none)
    keyword_required: bool  # a keyword-only parameter without default: no positional call can work
    text: str

    def accepts(self, count: int) -> bool:
        return not self.keyword_required and self.required <= count <= self.maximum

    def takes_exactly(self, count: int) -> bool:
        return self.accepts(count) and not self.accepts(count - 1) and not self.accepts(count + 1)


def _shape(obj: Any, *, drop_self: bool = False) -> _Shape | None:
    """The callable's positional shape, or None when its signature cannot be read (some builtins)."""
    try:
        signature = inspect.signature(obj)
    except Exception:
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if drop_self and params and params[0].kind in positional:
        params = params[1:]
    required = named = 0
    star = keyword_required = False
    for param in params:
        if param.kind in positional:
            named += 1
            required += param.default is param.empty
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            star = True
        elif param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is param.empty:
            keyword_required = True
    bare = [p.replace(annotation=p.empty) for p in params]
    text = str(signature.replace(parameters=bare, return_annotation=signature.empty))
    return _Shape(required, sys.maxsize if star else named, named, keyword_required, text)


def _detect(app: Any, label: str) -> _Kind:
    """ASGI 3 if async and taking three arguments; ASGI 2 if taking only the scope; WSGI if taking two.

    A plain (non-async) callable that must take three arguments can only be ASGI 3 returning an
    awaitable (a decorator around an async app, for instance), so it counts as ASGI 3. A bare sync
    ``(*args, **kwargs)`` wrapper (``wsgiref.validate.validator``, most decorators) is served as WSGI, the
    only sync interface that takes more than the scope, and the choice is logged: an ASGI app behind such
    a wrapper is async (or a class) and was recognised above.
    """
    if inspect.isclass(app):
        return _detect_class(app, label)
    shape = _shape(app)
    if _is_async(app):
        if shape is None or shape.accepts(3):
            return "asgi3"
        raise AppLoadError(f"{label!r} is async but takes {shape.text} instead of (scope, receive, send)")
    if shape is None:
        raise _cannot_tell(label, "its signature cannot be inspected")
    if shape.named == 0 and shape.maximum > 0 and not shape.keyword_required:
        _log.info("%s takes %s: serving it as WSGI (pass --interface to choose otherwise)", label, shape.text)
        return "wsgi"
    if shape.maximum == 0 and not shape.keyword_required:
        raise AppLoadError(f"{label!r} takes no arguments, so it is not an app; if it builds the app, pass --factory")
    if shape.takes_exactly(1):
        return "asgi2"
    if shape.accepts(2):
        return "wsgi"
    if shape.accepts(3):
        return "asgi3"
    raise _cannot_tell(label, f"it takes {shape.text}")


def _detect_class(cls: type, label: str) -> _Kind:
    """A class is an app only as ASGI 2 (built from the scope) or as PEP 3333's iterable WSGI class."""
    init = _shape(cls)
    call = _instance_call(cls)
    if init is not None and init.takes_exactly(1) and call is not None:
        call_shape = _shape(call, drop_self=True)
        if call_shape is None or call_shape.accepts(2):  # instance(receive, send)
            return "asgi2"
    if init is not None and init.takes_exactly(2) and hasattr(cls, "__iter__"):
        return "wsgi"
    takes = f" (its constructor takes {init.text})" if init is not None else ""
    raise AppLoadError(
        f"{label!r} is a class, not an app{takes}; point at an instance, or pass --factory if calling it "
        "builds the app"
    )


def _instance_call(cls: type) -> Any:
    """The ``__call__`` its instances would have (not ``type.__call__``, which every class has)."""
    for klass in cls.__mro__:
        if klass is not object and "__call__" in vars(klass):
            return cls.__call__
    return None


def _is_async(obj: Any) -> bool:
    """True for async functions, partials of them and objects whose ``__call__`` is async."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if _is_coroutine_function(obj):
        return True
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return False
    return _is_coroutine_function(getattr(obj, "__call__", None))  # noqa: B004 - the method, to see if async


def _is_coroutine_function(obj: Any) -> bool:
    if obj is None:
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    # Before 3.12, asgiref.sync.markcoroutinefunction (used by Django) marks sync callables this way.
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    return marker is not None and getattr(obj, "_is_coroutine", None) is marker


def _asgi2_to_asgi3(app: Callable[[Any], Any]) -> ASGI3App:
    """ASGI 2 builds an instance per connection from the scope, then awaits it with (receive, send)."""

    async def asgi3(scope: Any, receive: Any, send: Any) -> None:
        instance = app(scope)
        await instance(receive, send)

    return asgi3
