"""Tests for bascule.loader: import strings, the errors users see, and interface detection."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import sys
import textwrap
import wsgiref.validate
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bascule.errors import AppLoadError
from bascule.loader import LoadedApp, classify, import_from_string, load_app

Write = Callable[..., Path]


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Restore sys.path, and forget every module imported from this test's directory."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    root = tmp_path.resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(root):
            del sys.modules[name]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    """write(main="source", **{"pkg/__init__": ""}) creates throwaway modules in tmp_path."""

    def _write(**files: str) -> Path:
        for name, source in files.items():
            path = tmp_path / f"{name}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            monkeypatch.delitem(sys.modules, name.split("/")[0], raising=False)
        importlib.invalidate_caches()
        return tmp_path

    return _write


def load_error(spec: str, app_dir: Path, **kwargs: Any) -> str:
    with pytest.raises(AppLoadError) as info:
        load_app(spec, app_dir=str(app_dir), **kwargs)
    return str(info.value)


def classify_error(app: Any, interface: str = "auto", label: str = "main:app") -> str:
    with pytest.raises(AppLoadError) as info:
        classify(app, interface, label=label)
    return str(info.value)


# --- the import string --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["main", ":app", "main:", "main:app.", "main:.app", "a..b:app", "main:a:b", ""])
def test_malformed_spec_shows_the_expected_form(spec: str, tmp_path: Path) -> None:
    assert load_error(spec, tmp_path) == f"app {spec!r} must look like MODULE:ATTR, for example main:app"


def test_spec_with_call_parentheses_points_at_factory(tmp_path: Path) -> None:
    message = load_error("main:create_app()", tmp_path)
    assert message == (
        "app 'main:create_app()' must look like MODULE:ATTR, for example main:app; "
        "to call a factory, drop the () and pass --factory"
    )


def test_imports_module_attribute(write: Write) -> None:
    app_dir = write(main="def app(environ, start_response): pass\n")
    obj = import_from_string("main:app", app_dir=str(app_dir))
    assert obj.__name__ == "app"
    assert sys.modules["main"].app is obj


def test_dotted_attribute_and_package_module(write: Write) -> None:
    app_dir = write(**{
        "pkg/__init__": "",
        "pkg/web": """
            class Holder:
                class Inner:
                    @staticmethod
                    def app(environ, start_response): pass
            holder = Holder()
        """,
    })
    obj = import_from_string("pkg.web:holder.Inner.app", app_dir=str(app_dir))
    assert obj is sys.modules["pkg.web"].Holder.Inner.app


def test_app_dir_goes_first_on_sys_path_once(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    app_dir = write(main="app = 1\n")
    entry = str(app_dir.resolve())
    sys.path.append(entry)
    import_from_string("main:app", app_dir=str(app_dir))
    import_from_string("main:app", app_dir=str(app_dir))
    assert sys.path[0] == entry
    assert sys.path.count(entry) == 1


def test_relative_app_dir_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "relmain.py").write_text("app = 42\n")
    monkeypatch.delitem(sys.modules, "relmain", raising=False)
    monkeypatch.chdir(tmp_path)
    assert import_from_string("relmain:app", app_dir="src") == 42
    assert sys.path[0] == str((tmp_path / "src").resolve())


def test_missing_app_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert load_error("main:app", missing) == (
        f"app directory {str(missing)!r} does not exist; pass an existing directory as --app-dir"
    )


# --- module not found ---------------------------------------------------------------------------------


def test_module_not_found_suggests_a_py_file(write: Write) -> None:
    app_dir = write(main="app = 1\n")
    assert load_error("mian:app", app_dir) == "cannot import module 'mian' (did you mean 'main'?)"


def test_module_not_found_suggests_a_package(write: Write) -> None:
    app_dir = write(**{"myapp/__init__": "app = 1\n"})
    assert load_error("myap:app", app_dir) == "cannot import module 'myap' (did you mean 'myapp'?)"


def test_module_not_found_without_suggestion_says_where_it_looked(write: Write) -> None:
    app_dir = write(main="app = 1\n")
    assert load_error("zzqx:app", app_dir) == (
        f"cannot import module 'zzqx': no zzqx.py or zzqx/ package in {app_dir.resolve()} or on sys.path; "
        "check --app-dir"
    )


def test_missing_parent_package_is_what_gets_reported(write: Write) -> None:
    app_dir = write(**{"myapp/__init__": "", "myapp/views": "app = 1\n"})
    assert load_error("myap.views:app", app_dir) == "cannot import module 'myap' (did you mean 'myapp'?)"


def test_submodule_not_found_suggests_a_sibling(write: Write) -> None:
    app_dir = write(**{"myapp/__init__": "", "myapp/views": "app = 1\n"})
    assert load_error("myapp.vews:app", app_dir) == (
        "cannot import module 'myapp.vews' (did you mean 'myapp.views'?)"
    )


def test_submodule_not_found_without_suggestion(write: Write) -> None:
    app_dir = write(**{"myapp/__init__": "", "myapp/views": "app = 1\n"})
    assert load_error("myapp.zzqx:app", app_dir) == (
        "cannot import module 'myapp.zzqx': package 'myapp' has no module 'zzqx'"
    )


def test_submodule_of_a_plain_module(write: Write) -> None:
    app_dir = write(main="app = 1\n")
    assert load_error("main.web:app", app_dir) == (
        "cannot import module 'main.web': 'main' is a module, not a package, so it has no submodule 'web'"
    )


def test_user_module_importing_a_missing_module_says_so_with_the_user_frames(write: Write) -> None:
    app_dir = write(
        main="import helper\napp = 1\n",
        helper="x = 1\nimport not_installed_bascule_xyz\n",
    )
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: No module named 'not_installed_bascule_xyz'",
        '  File "main.py", line 1, in <module>',
        '  File "helper.py", line 2, in <module>',
    ]


# --- other import failures ----------------------------------------------------------------------------


def test_name_error_at_import_shows_type_message_and_line(write: Write) -> None:
    app_dir = write(main="x = 1\n\nundefined_thing\n")
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: NameError: name 'undefined_thing' is not defined",
        '  File "main.py", line 3, in <module>',
    ]


def test_error_inside_a_function_called_at_import(write: Write) -> None:
    app_dir = write(main="""
        def build():
            raise RuntimeError("no database")
        app = build()
    """)
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: RuntimeError: no database",
        '  File "main.py", line 4, in <module>',
        '  File "main.py", line 3, in build',
    ]


def test_traceback_tail_is_short(write: Write) -> None:
    app_dir = write(
        main="import m1\n", m1="import m2\n", m2="import m3\n", m3="import m4\n", m4="1 / 0\n",
    )
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: ZeroDivisionError: division by zero",
        '  File "m2.py", line 1, in <module>',
        '  File "m3.py", line 1, in <module>',
        '  File "m4.py", line 1, in <module>',
    ]


def test_library_frames_are_left_out(write: Write) -> None:
    app_dir = write(main="import json\njson.loads('{')\n")
    lines = load_error("main:app", app_dir).splitlines()
    assert lines[0].startswith("importing 'main' failed: JSONDecodeError: Expecting property name")
    assert lines[1:] == ['  File "main.py", line 2, in <module>']


def test_syntax_error_names_file_and_line(write: Write) -> None:
    app_dir = write(main="x = 1\ndef broken(:\n    pass\n")
    assert load_error("main:app", app_dir) == (
        "importing 'main' failed: SyntaxError: invalid syntax (main.py, line 2)"
    )


def test_syntax_error_in_an_imported_module_shows_the_import_chain(write: Write) -> None:
    app_dir = write(main="import helper\n", helper="if True\n    pass\n")
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: SyntaxError: expected ':' (helper.py, line 1)",
        '  File "main.py", line 1, in <module>',
    ]


def test_import_error_that_is_not_module_not_found(write: Write) -> None:
    app_dir = write(main="from helper import nothing\n", helper="something = 1\n")
    lines = load_error("main:app", app_dir).splitlines()
    assert lines[0].startswith("importing 'main' failed: ImportError: cannot import name 'nothing' from 'helper'")
    assert lines[1:] == ['  File "main.py", line 1, in <module>']


def test_sys_exit_at_import_is_reported_not_obeyed(write: Write) -> None:
    app_dir = write(main="import sys\nsys.exit(3)\n")
    assert load_error("main:app", app_dir).splitlines() == [
        "importing 'main' failed: SystemExit: 3",
        '  File "main.py", line 2, in <module>',
    ]


def test_exception_without_message(write: Write) -> None:
    app_dir = write(main="raise RuntimeError\n")
    assert load_error("main:app", app_dir).splitlines()[0] == "importing 'main' failed: RuntimeError"


def test_import_failure_message_hides_import_machinery(write: Write) -> None:
    app_dir = write(main="import helper\n", helper="raise ValueError('bad')\n")
    message = load_error("main:app", app_dir)
    assert "<frozen" not in message
    assert "importlib" not in message
    assert "loader.py" not in message


# --- attributes ---------------------------------------------------------------------------------------


def test_missing_attribute_suggests_the_close_name(write: Write) -> None:
    app_dir = write(main="app = 1\napplication_settings = 2\n")
    assert load_error("main:ap", app_dir) == "module 'main' has no attribute 'ap' (did you mean 'app'?)"


def test_missing_attribute_without_suggestion(write: Write) -> None:
    app_dir = write(main="app = 1\n")
    assert load_error("main:zzqx", app_dir) == "module 'main' has no attribute 'zzqx'"


def test_private_names_are_not_suggested(write: Write) -> None:
    app_dir = write(main="_app = 1\n")
    assert load_error("main:app", app_dir) == "module 'main' has no attribute 'app'"


def test_missing_attribute_deeper_in_the_dotted_path(write: Write) -> None:
    app_dir = write(main="""
        class Holder:
            app = 1
        holder = Holder()
    """)
    assert load_error("main:holder.ap", app_dir) == "'main:holder' has no attribute 'ap' (did you mean 'app'?)"


def test_attribute_that_fails_for_another_reason(write: Write) -> None:
    app_dir = write(main="""
        def __getattr__(name):
            raise RuntimeError("lazy import broke")
    """)
    assert load_error("main:thing", app_dir) == "getting 'main:thing' failed: RuntimeError: lazy import broke"


@pytest.mark.parametrize(("source", "what"), [("{}", "a dict"), ("None", "None"), ("3", "an int")])
def test_not_callable(write: Write, source: str, what: str) -> None:
    app_dir = write(main=f"app = {source}\n")
    assert load_error("main:app", app_dir) == f"'main:app' is not callable (it is {what})"


# --- factories ----------------------------------------------------------------------------------------


def test_factory_is_called_and_its_result_classified(write: Write) -> None:
    app_dir = write(main="""
        def create_app():
            def app(environ, start_response):
                return []
            return app
    """)
    loaded = load_app("main:create_app", factory=True, app_dir=str(app_dir))
    assert loaded.interface == "wsgi"
    assert loaded.label == "main:create_app (WSGI)"
    assert loaded.app.__name__ == "app"


def test_factory_that_raises_shows_message_and_frame(write: Write) -> None:
    app_dir = write(main="""
        def create_app():
            raise ValueError("DATABASE_URL is not set")
    """)
    assert load_error("main:create_app", app_dir, factory=True).splitlines() == [
        "calling factory 'main:create_app' failed: ValueError: DATABASE_URL is not set",
        '  File "main.py", line 3, in create_app',
    ]


def test_factory_that_needs_arguments(write: Write) -> None:
    app_dir = write(main="def create_app(settings):\n    pass\n")
    assert load_error("main:create_app", app_dir, factory=True) == (
        "calling factory 'main:create_app' failed: TypeError: create_app() missing 1 required positional "
        "argument: 'settings'"
    )


def test_factory_that_is_not_callable(write: Write) -> None:
    app_dir = write(main="create_app = {}\n")
    assert load_error("main:create_app", app_dir, factory=True) == (
        "'main:create_app' is not callable (it is a dict); --factory needs a function that returns the app"
    )


def test_factory_returning_something_not_callable(write: Write) -> None:
    app_dir = write(main="def create_app():\n    return None\n")
    assert load_error("main:create_app", app_dir, factory=True) == (
        "factory 'main:create_app' returned None, which is not callable; it must return the app"
    )


@pytest.mark.filterwarnings("error")
def test_async_factory_is_refused_without_a_never_awaited_warning(write: Write) -> None:
    app_dir = write(main="async def create_app():\n    return None\n")
    assert load_error("main:create_app", app_dir, factory=True) == (
        "factory 'main:create_app' is async; --factory needs a plain function that returns the app"
    )


def test_forgotten_factory_flag_is_pointed_out(write: Write) -> None:
    app_dir = write(main="def create_app():\n    pass\n")
    assert load_error("main:create_app", app_dir) == (
        "'main:create_app' takes no arguments, so it is not an app; if it builds the app, pass --factory"
    )


# --- interface detection: ASGI 3 ----------------------------------------------------------------------


async def asgi3_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class Asgi3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi3_app(scope, receive, send)


def assert_asgi3(loaded: LoadedApp, app: Any, label: str = "main:app (ASGI 3)") -> None:
    assert loaded.interface == "asgi3"
    assert loaded.app is app
    assert loaded.label == label


def test_async_function_is_asgi3() -> None:
    assert_asgi3(classify(asgi3_app, label="main:app"), asgi3_app)


def test_object_with_async_call_is_asgi3() -> None:
    app = Asgi3Object()
    assert_asgi3(classify(app, label="main:app"), app)


def test_partial_of_async_function_is_asgi3() -> None:
    async def handler(config: object, scope: Any, receive: Any, send: Any) -> None:
        pass

    app = functools.partial(handler, object())
    assert_asgi3(classify(app, label="main:app"), app)


def test_partial_of_object_with_async_call_is_asgi3() -> None:
    class Configured:
        async def __call__(self, config: object, scope: Any, receive: Any, send: Any) -> None:
            pass

    app = functools.partial(Configured(), object())
    assert_asgi3(classify(app, label="main:app"), app)


def test_async_generic_signature_is_asgi3() -> None:
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        pass

    assert_asgi3(classify(wrapper, label="main:app"), wrapper)


def test_function_marked_as_coroutine_function_is_asgi3() -> None:
    from asgiref.sync import markcoroutinefunction

    def app(scope: Any, receive: Any, send: Any) -> Any:
        return asgi3_app(scope, receive, send)

    assert_asgi3(classify(markcoroutinefunction(app), label="main:app"), app)


def test_sync_callable_that_must_take_three_arguments_is_asgi3() -> None:
    def decorated(scope: Any, receive: Any, send: Any) -> Any:
        return asgi3_app(scope, receive, send)

    assert_asgi3(classify(decorated, label="main:app"), decorated)


def test_async_callable_with_the_wrong_arguments() -> None:
    async def app(scope: Any) -> None:
        pass

    assert classify_error(app) == "'main:app' is async but takes (scope) instead of (scope, receive, send)"


# --- interface detection: ASGI 2 ----------------------------------------------------------------------


def run_asgi3(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": "/"}, receive, send))
    return sent


class Asgi2App:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.scope["path"].encode()})


def assert_asgi2(loaded: LoadedApp) -> None:
    assert loaded.interface == "asgi3"
    assert loaded.label == "main:app (ASGI 2)"
    assert run_asgi3(loaded.app) == [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"/"},
    ]


def test_asgi2_class_is_wrapped_as_asgi3() -> None:
    assert_asgi2(classify(Asgi2App, label="main:app"))


def test_asgi2_class_with_plain_call_returning_a_coroutine() -> None:
    class Legacy(Asgi2App):
        def __call__(self, receive: Any, send: Any) -> Any:
            return Asgi2App.__call__(self, receive, send)

    assert_asgi2(classify(Legacy, label="main:app"))


def test_asgi2_function_of_scope_is_wrapped_as_asgi3() -> None:
    def app(scope: Any) -> Any:
        return Asgi2App(scope)

    assert_asgi2(classify(app, label="main:app"))


def test_forced_asgi2_is_wrapped() -> None:
    def generic(*args: Any) -> Any:
        return Asgi2App(*args)

    assert_asgi2(classify(generic, "asgi2", label="main:app"))


# --- interface detection: WSGI ------------------------------------------------------------------------


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


class WsgiObject:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return wsgi_app(environ, start_response)


class WebobLike:
    """webob's @wsgify objects take (req, *args, **kw) and are called as WSGI apps."""

    def __call__(self, req: Any, *args: Any, **kw: Any) -> list[bytes]:
        return []


class Pep3333Class:
    """PEP 3333 allows a class as the app: constructing it is the call, iterating it is the body."""

    def __init__(self, environ: Any, start_response: Any) -> None:
        start_response("200 OK", [])

    def __iter__(self) -> Iterator[bytes]:
        yield b""


def wsgi_with_extra(environ: Any, start_response: Any, *args: Any) -> list[bytes]:
    return []


def wsgi_with_default(environ: Any, start_response: Any, extra: object = None) -> list[bytes]:
    return []


def wsgi_environ_star(environ: Any, *args: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize(
    "app", [wsgi_app, WsgiObject(), WebobLike(), Pep3333Class, wsgi_with_extra, wsgi_with_default,
            wsgi_environ_star],
    ids=["function", "object", "webob-like", "pep3333-class", "star-args", "default", "environ-star"],
)
def test_wsgi_callables(app: Any) -> None:
    loaded = classify(app, label="main:app")
    assert loaded == LoadedApp(app, "wsgi", "main:app (WSGI)")


# --- interface detection: cannot tell, forced, bad names ----------------------------------------------


def test_generic_sync_wrapper_is_served_as_wsgi_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pass

    with caplog.at_level(logging.INFO, logger="bascule.error"):
        assert classify(wrapper, label="main:app") == LoadedApp(wrapper, "wsgi", "main:app (WSGI)")
    assert "main:app takes (*args, **kwargs): serving it as WSGI" in caplog.text


def test_star_args_only_is_served_as_wsgi() -> None:
    def wrapper(*args: Any) -> Any:
        pass

    assert classify(wrapper).interface == "wsgi"


def test_wsgiref_validator_is_served_as_wsgi() -> None:
    """wsgiref.validate.validator(app) returns a bare (*args, **kw) function: PEP 3333's own lint tool."""
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    assert classify(wsgiref.validate.validator(app)).interface == "wsgi"


def test_generic_async_wrapper_is_asgi3() -> None:
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        pass

    assert classify(wrapper).interface == "asgi3"


def test_uninspectable_signature_is_ambiguous() -> None:
    assert classify_error(max) == (
        "cannot tell whether 'main:app' is ASGI or WSGI (its signature cannot be inspected); "
        "pass --interface asgi3|asgi2|wsgi"
    )


def test_too_many_arguments_is_ambiguous() -> None:
    def app(a: Any, b: Any, c: Any, d: Any) -> None:
        pass

    assert classify_error(app) == (
        "cannot tell whether 'main:app' is ASGI or WSGI (it takes (a, b, c, d)); pass --interface asgi3|asgi2|wsgi"
    )


def test_required_keyword_only_argument_is_ambiguous() -> None:
    def app(environ: Any, start_response: Any, *, config: Any) -> None:
        pass

    assert "(it takes (environ, start_response, *, config))" in classify_error(app)


def test_class_that_is_not_an_app() -> None:
    class Service:
        def __init__(self, host: str, port: int, debug: bool = False) -> None:
            pass

    assert classify_error(Service) == (
        "'main:app' is a class, not an app (its constructor takes (host, port, debug=False)); "
        "point at an instance, or pass --factory if calling it builds the app"
    )


def test_class_of_one_argument_without_call_is_not_asgi2() -> None:
    class Holder:
        def __init__(self, scope: Any) -> None:
            pass

    assert "'main:app' is a class, not an app" in classify_error(Holder)


@pytest.mark.parametrize("interface", ["asgi3", "wsgi"])
def test_forced_interface_skips_detection(interface: str) -> None:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pass

    loaded = classify(wrapper, interface, label="main:app")
    assert loaded.app is wrapper
    assert loaded.interface == interface
    assert loaded.label == f"main:app ({'ASGI 3' if interface == 'asgi3' else 'WSGI'})"


def test_forced_interface_still_needs_a_callable() -> None:
    assert classify_error([], "wsgi", label="app") == "'app' is not callable (it is a list)"


def test_unknown_interface_name() -> None:
    assert classify_error(wsgi_app, "asgi") == (
        "interface must be one of auto, asgi3, asgi2, wsgi; got 'asgi' (did you mean 'asgi3'?)"
    )


def test_unknown_interface_is_refused_before_importing(write: Write) -> None:
    app_dir = write(main="raise RuntimeError('imported')\n")
    assert load_error("main:app", app_dir, interface="wssgi").startswith("interface must be one of")
    assert "main" not in sys.modules


def test_load_app_with_forced_interface(write: Write) -> None:
    app_dir = write(main="def app(*args):\n    return []\n")
    loaded = load_app("main:app", app_dir=str(app_dir), interface="wsgi")
    assert (loaded.interface, loaded.label) == ("wsgi", "main:app (WSGI)")


# --- real frameworks ----------------------------------------------------------------------------------


def test_flask_app_is_wsgi(write: Write) -> None:
    app_dir = write(flask_main="""
        from flask import Flask
        app = Flask(__name__)
    """)
    loaded = load_app("flask_main:app", app_dir=str(app_dir))
    assert (loaded.interface, loaded.label) == ("wsgi", "flask_main:app (WSGI)")


def test_flask_class_itself_is_not_an_app() -> None:
    from flask import Flask

    assert "'main:app' is a class, not an app" in classify_error(Flask)


@pytest.fixture
def django_settings() -> None:
    from django.conf import settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="bascule-tests", ALLOWED_HOSTS=["*"], INSTALLED_APPS=[], MIDDLEWARE=[]
        )


@pytest.mark.usefixtures("django_settings")
def test_django_wsgi_handler_is_wsgi() -> None:
    from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

    app = get_wsgi_application()
    assert classify(app, label="proj.wsgi:application") == LoadedApp(
        app, "wsgi", "proj.wsgi:application (WSGI)"
    )


@pytest.mark.usefixtures("django_settings")
def test_django_asgi_handler_is_asgi3() -> None:
    from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]

    app = get_asgi_application()
    assert classify(app, label="proj.asgi:application") == LoadedApp(
        app, "asgi3", "proj.asgi:application (ASGI 3)"
    )


def test_starlette_app_is_asgi3(write: Write) -> None:
    app_dir = write(star_main="""
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.gzip import GZipMiddleware
        app = Starlette(middleware=[Middleware(GZipMiddleware)])
        wrapped = GZipMiddleware(app)
    """)
    assert load_app("star_main:app", app_dir=str(app_dir)).label == "star_main:app (ASGI 3)"
    assert load_app("star_main:wrapped", app_dir=str(app_dir)).interface == "asgi3"


def test_fastapi_app_is_asgi3(write: Write) -> None:
    app_dir = write(fast_main="""
        from fastapi import FastAPI
        app = FastAPI()
        def create_app():
            return FastAPI()
    """)
    assert load_app("fast_main:app", app_dir=str(app_dir)).label == "fast_main:app (ASGI 3)"
    assert load_app("fast_main:create_app", factory=True, app_dir=str(app_dir)).interface == "asgi3"
