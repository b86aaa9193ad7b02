"""A bascule master whose merged metrics a plain http.server thread serves at /metrics, for the Prometheus
test while the admin listener is not there to serve them (it_workers:app on 2 workers, --metrics).

python it_metrics_master.py APP_PORT METRICS_PORT
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bascule.config import Config
from bascule.logs import configure_logging
from bascule.ops.exposition import CONTENT_TYPE
from bascule.ops.views import MasterMetrics
from bascule.supervisor import Supervisor


def main(app_port: int, metrics_port: int) -> int:
    config = Config(app="it_workers:app", port=app_port, workers=2, metrics=True, access_log=False)
    configure_logging(config)
    supervisor = Supervisor(config)
    assert supervisor.metrics is not None
    view = MasterMetrics(supervisor.metrics)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = view.exposition()
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", metrics_port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
