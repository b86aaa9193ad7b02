"""The process entry: one server process alone, or a master with its workers.

Split from server.py so that module is one serving process and nothing more: the supervisor and the workers
import the server (a worker serves with it), and only this module, above all three, chooses between them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bascule.config import Config, needs_master
from bascule.logs import configure_logging


def run_config(config: Config, app: Any = None) -> int:
    """Serve ``config`` until a signal; the exit code (0 after a graceful stop).

    One process serves alone unless the options need a master (several workers, recycling, --reload);
    then this process becomes the master and the workers serve.
    """
    configure_logging(config)
    if needs_master(config):
        from bascule.supervisor import Supervisor

        return Supervisor(config, app).run()
    from bascule.server import Server, new_event_loop
    from bascule.tuning import tune_gc, tune_malloc
    from bascule.workers import PidFile, set_process_title

    set_process_title(f"bascule {config.app or ''}".rstrip())
    if config.runtime_tuning:
        tune_malloc()
    with PidFile(config.pid):
        server = Server(config, app, on_ready=tune_gc if config.runtime_tuning else None)
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(server.serve(install_signals=True))
    return 0
