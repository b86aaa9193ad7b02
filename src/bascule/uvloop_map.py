"""uvloop's map of file descriptors to transports, made cheap to update.

uvloop keeps every transport it makes in a ``weakref.WeakValueDictionary`` keyed by its file descriptor (the
loop's private ``_transports``), only to refuse ``add_reader``/``add_writer`` on a descriptor a live transport
owns. Every accepted connection stores itself there, and WeakValueDictionary does it in Python: its
``__setitem__`` makes a ``KeyedRef`` (a Python subclass of ``weakref.ref``, with a removal callback), and the
connection's end runs that callback, Python again, to remove the entry. Callgrind, a new connection per request
(wrk, 32 clients, ``Connection: close``, WSGI threads mode): 6.2k instructions to store and 1.3k to remove, of
71k per request; the server's next largest per-connection cost is its HTTP/1.1 parser, at 3.1k.

:func:`lighten` gives that one dictionary the class :class:`FdTransports`, whose ``__setitem__`` stores a plain
weak reference, without a callback. uvloop reads the map with ``map[fd]`` only, and that answers as before:
WeakValueDictionary's ``__getitem__`` calls the reference, and a dead one is a KeyError, as a removed entry
was. The dead entry stays until a later transport takes the same descriptor number, so the map holds at most
one entry per descriptor number ever used for a transport (the descriptor limit bounds it). ``len()`` counts
the dead entries too: uvloop never asks it (0.23 uses ``map[fd] = transport`` and ``map[fd]`` only).

The dictionary has no Python name (a C attribute of uvloop's Loop): it is found among the loop's references
(``gc.get_referents``, which lists what a Cython object's traverse visits), and changed only where exactly one
WeakValueDictionary is there. A uvloop built otherwise finds none and is left as it is, at its own cost.
tests/test_uvloop_map.py checks on the installed uvloop that the map is found, and that uvloop's refusal still
works with it: add_reader on a live transport's descriptor raises, and on a closed one's number does not.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, Final

from bascule.compile_hints import mypyc_attr

_ref: Final = weakref.ref  # Final: a C static when compiled, not a module lookup per call


@mypyc_attr(native_class=False)  # a Python class, as its base: the map's class is changed to it in place
class FdTransports(weakref.WeakValueDictionary[int, Any]):
    """uvloop's descriptor -> transport map, storing plain weak references (see the module docstring)."""

    def __setitem__(self, key: int, value: Any) -> None:
        mapping: Any = self  # its ``data`` dict: WeakValueDictionary's own, which typeshed leaves out
        mapping.data[key] = _ref(value)


def lighten(loop: asyncio.AbstractEventLoop) -> bool:
    """Give ``loop``'s descriptor -> transport map the class :class:`FdTransports`; True if it did (a uvloop loop
    with the one map where expected), False otherwise (any other loop: nothing changed)."""
    if not type(loop).__module__.startswith("uvloop"):
        return False
    found = [ref for ref in gc.get_referents(loop) if type(ref) is weakref.WeakValueDictionary]
    if len(found) != 1:
        return False
    found[0].__class__ = FdTransports
    return True
