"""The matcher compiled with mypyc: built by the install, used only while it is current.

The matcher's modules and the event parser (:data:`MODULES`) are plain Python and stay so in the checkout. ``make
install`` also compiles them, unchanged, with mypyc
into a directory of the virtual environment named after a hash of their sources and the
Python ABI (:func:`build_dir`; it records the mypy that built it, and a build by another
mypy is redone; ``signalbox native build`` does it again, ``signalbox native status`` says
which form runs). When ``streams`` is imported,
:func:`install` looks for the directory of the sources as they are *now*: if it exists,
the matcher's modules are loaded from it; if a source changed since, or nothing was
built (no C compiler, a wheel install, ``SIGNALBOX_NATIVE=0``), they are loaded as plain
Python. A build can therefore never be stale, and both forms behave the same (the test
suite runs the matcher's tests on both, ``tests/test_native.py``).

The compiled modules call each other directly, so they are used all together or not at
all. ``SIGNALBOX_NATIVE=0`` turns the compiled build off; ``SIGNALBOX_NATIVE=1`` makes
its absence an error (CI, once it has built one).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent  # streams/
MODULES = ("streams.matching.index", "streams.matching.match", "streams.filters.eventbridge",
           "streams.filters.jsonb", "streams.model.jsonvalue")
ENV = "SIGNALBOX_NATIVE"
KEEP_BUILDS = 4  # builds kept in the environment, the current one included
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so


class NativeError(RuntimeError):
    """The compiled build was required (``SIGNALBOX_NATIVE=1``) and is not there."""


def _source(module: str) -> Path:
    return PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")


_BUILT_BY = "built-by-mypy"  # in a build directory: the version of the mypy that compiled it


def _mypy_version() -> str:
    """The installed mypy's version (a metadata lookup of tens of ms: at build time only)."""
    try:
        from importlib.metadata import version

        return version("mypy")
    except Exception:  # not installed: nothing can be built
        return "none"


def build_key() -> str:
    """What using a build depends on: the sources and the interpreter's ABI (a compiled
    module needs nothing of mypy at run time)."""
    digest = hashlib.sha256()
    digest.update(f"{_SUFFIX}\0".encode())
    for module in MODULES:
        digest.update(module.encode() + b"\0" + _source(module).read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def builds_root() -> Path:
    return Path(sys.prefix) / "share" / "signalbox-native"


def build_dir() -> Path:
    return builds_root() / build_key()


class _Finder(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their compiled files (and nothing else)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_state: dict[str, str] = {}  # "mode": "compiled" | "plain", "why": a sentence


def _compiled_files(directory: Path) -> dict[str, Path]:
    """Module name -> compiled file of a build directory (the modules and mypyc's shared
    library of the group, a top-level module)."""
    files: dict[str, Path] = {}
    for file in directory.rglob(f"*{_SUFFIX}"):
        parts = file.relative_to(directory).with_name(file.name[: -len(_SUFFIX)]).parts
        files[".".join(parts)] = file
    return files


def install() -> None:
    """Load the matcher's modules from the current compiled build, if there is one (module
    docstring). Called once, when ``streams`` is imported, before any of them is."""
    if _state:
        return
    setting = os.environ.get(ENV, "").strip()
    if setting == "0":
        _state.update(mode="plain", why=f"{ENV}=0")
        return
    directory = build_dir()
    files = _compiled_files(directory) if directory.is_dir() else {}
    if not all(module in files for module in MODULES):
        why = (f"no compiled build of these sources in {builds_root()} "
               "(`make install` builds one where a C compiler and mypy are present)")
        if setting == "1":
            raise NativeError(f"{ENV}=1 and {why}")
        _state.update(mode="plain", why=why)
        return
    already = [module for module in MODULES if module in sys.modules]
    if already:  # imported before streams itself: cannot mix the two forms
        _state.update(mode="plain", why=f"{', '.join(already)} imported before streams.native")
        return
    sys.meta_path.insert(0, _Finder(files))
    _state.update(mode="compiled", why=f"mypyc build {directory.name}")


def status() -> tuple[str, str]:
    """("compiled" | "plain", why): how the matcher runs in this process."""
    return _state.get("mode", "plain"), _state.get("why", "streams.native.install() not called")


def missing_tools() -> str:
    """What a build needs and this machine lacks ("" when nothing): mypyc, a C compiler,
    the interpreter's headers."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    missing = []
    if importlib.util.find_spec("mypyc") is None:
        missing.append("mypyc (pip install mypy)")
    if shutil.which(compiler) is None:
        missing.append(f"C compiler ({compiler})")
    if not Path(sysconfig.get_paths()["include"], "Python.h").is_file():
        missing.append("Python headers (Python.h; Debian: python3-dev)")
    return ", ".join(missing)


def build(quiet: bool = False) -> Path | None:
    """Compile the matcher's modules into :func:`build_dir` unless they are there already.
    Returns the directory, or None (with the reason printed) when it cannot be built; the
    matcher then runs as plain Python."""
    target = build_dir()
    mypy_version = _mypy_version()
    built_by = target / _BUILT_BY
    if (target.is_dir() and all(m in _compiled_files(target) for m in MODULES)
            and built_by.is_file() and built_by.read_text() == mypy_version):
        if not quiet:
            print(f"compiled matcher: up to date ({target})")
        return target
    missing = missing_tools()
    if missing:
        print(f"compiled matcher: not built (no {missing}); the matcher runs as plain Python")
        return None
    with tempfile.TemporaryDirectory(prefix="signalbox-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(PACKAGE, work / "streams", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        sources = [str(_source(m).relative_to(PACKAGE.parent)) for m in MODULES]
        env = {**os.environ, ENV: "0", "MYPYC_OPT_LEVEL": os.environ.get("MYPYC_OPT_LEVEL", "3")}
        done = subprocess.run([sys.executable, "-m", "mypyc", "--ignore-missing-imports", *sources], cwd=work,
                              env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print("compiled matcher: mypyc failed; the matcher runs as plain Python\n"
                  + (done.stdout + done.stderr)[-3000:], file=sys.stderr)
            return None
        staging = builds_root() / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        for file in work.rglob(f"*{_SUFFIX}"):
            if "build" in file.relative_to(work).parts[:1]:
                continue  # the setuptools build tree
            dest = staging / file.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dest)
        if not all(m in _compiled_files(staging) for m in MODULES):
            print(f"compiled matcher: mypyc made no module for some of {', '.join(MODULES)}", file=sys.stderr)
            shutil.rmtree(staging, ignore_errors=True)
            return None
        (staging / _BUILT_BY).write_text(mypy_version)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    # builds of other sources: the newest few stay (other checkouts of this environment)
    others = sorted((d for d in builds_root().iterdir() if d != target and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for old in others[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"compiled matcher: built with mypyc ({target})")
    return target
