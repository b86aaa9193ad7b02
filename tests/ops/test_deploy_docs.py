"""docs/deployment.md's Kubernetes manifest and systemd unit: their commands are valid bascule command lines,
and their stop deadlines cover --shutdown-delay + --timeout-graceful-shutdown + the master's straggler grace
(so a copy-pasted manifest does not SIGKILL a server that is still draining)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from bascule.cli import load_config
from bascule.supervisor import STRAGGLER_GRACE

DOC = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end]


def test_kubernetes_manifest() -> None:
    text = re.search(r"```yaml\n(.*?)```", section("Kubernetes"), re.S)
    assert text is not None
    manifest = yaml.safe_load(text.group(1))
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][0] == "bascule"
    config = load_config(container["command"][1:], environ={}, cwd="/nonexistent")
    assert config.admin_bind == "127.0.0.1:9000" and config.shutdown_delay > 0
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    slept = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop[-1]).group(1))  # type: ignore[union-attr]
    needed = slept + config.shutdown_delay + config.timeout_graceful_shutdown + STRAGGLER_GRACE
    assert pod["terminationGracePeriodSeconds"] > needed
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        command = container[probe]["exec"]["command"]
        assert f"http://{config.admin_bind}{path}" in command[-1]


def test_systemd_unit() -> None:
    text = section("systemd")
    unit = re.search(r"```ini\n(.*?)```", text, re.S)
    assert unit is not None
    body = unit.group(1).replace("\\\n", " ")
    exec_start = re.search(r"^ExecStart=(.*)$", body, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", body, re.M)
    assert exec_start is not None and stop is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[0].endswith("/bascule")
    config = load_config(argv[1:], environ={}, cwd="/nonexistent")
    assert config.admin_bind is not None and config.shutdown_delay > 0
    assert "KillMode=mixed" in body  # SIGTERM to the master only: it holds the delay
    assert int(stop.group(1)) > config.shutdown_delay + config.timeout_graceful_shutdown + STRAGGLER_GRACE
