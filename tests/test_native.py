"""The matcher compiled with mypyc (``streams/native.py``): used only while it is current.

``make install`` compiles the matcher's modules into the virtual environment, keyed by a
hash of their sources. These tests run copies of the package in subprocesses: an unchanged
copy loads the compiled modules, an edited one (the build is then stale) loads plain
Python, and ``SIGNALBOX_NATIVE`` turns the build off or makes its absence an error. The
matcher's own tests then run in the form this process does not use, so both forms pass
them in every run of the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from streams import native

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import streams, streams.native as n, streams.matching.index as i, streams.model.jsonvalue as j; "
         "print(n.status()[0], i.__file__.rsplit('.', 1)[-1], j.__file__.rsplit('.', 1)[-1])")


needs_build = pytest.mark.skipif(not native.build_dir().is_dir(),
                                 reason="no compiled build of these sources (no C compiler or mypy at install)")


def probe(package_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != native.ENV}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=package_root, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(package_root), **env}, timeout=120)


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "streams", tmp_path / "streams", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_install_built_the_compiled_matcher_and_this_run_uses_it() -> None:
    missing = native.missing_tools()
    if missing:
        pytest.skip(f"no {missing}: the matcher runs as plain Python")
    if os.environ.get(native.ENV) == "0":
        pytest.skip(f"{native.ENV}=0")
    mode, why = native.status()
    assert mode == "compiled", f"the matcher runs as plain Python ({why}); `make install` builds it"
    import streams.matching.index as index

    assert index.__file__ is not None and index.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX"))


@needs_build
def test_an_unchanged_copy_uses_the_build_and_an_edited_one_never_does(tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    same = probe(root)
    assert same.returncode == 0, same.stderr
    assert same.stdout.split() == ["compiled", "so", "so"]
    source = root / "streams" / "filters" / "eventbridge.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    edited = probe(root)
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.split() == ["plain", "py", "py"], "a build of other sources was used"


@needs_build
def test_signalbox_native_turns_it_off_or_requires_it(tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    off = probe(root, SIGNALBOX_NATIVE="0")
    assert off.stdout.split() == ["plain", "py", "py"], off.stderr
    assert probe(root, SIGNALBOX_NATIVE="1").stdout.split() == ["compiled", "so", "so"]
    source = root / "streams" / "matching" / "index.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    required = probe(root, SIGNALBOX_NATIVE="1")
    assert required.returncode != 0
    assert "NativeError: SIGNALBOX_NATIVE=1 and no compiled build of these sources" in required.stderr


@needs_build
def test_the_matchers_tests_pass_in_the_other_form_too() -> None:
    """The suite runs in one form (compiled, after `make install`); the matcher's tests run
    here in the other one."""
    other = "0" if native.status()[0] == "compiled" else "1"
    tests = ["tests/test_eventbridge.py", "tests/test_index.py", "tests/test_jsonb.py", "tests/test_properties.py",
             "tests/test_parse_equivalence.py", "tests/test_poison_units.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                          env={**os.environ, native.ENV: other}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.strip().splitlines()[-1]
