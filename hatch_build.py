"""Hatchling build hook: compile the optional C accelerator ``_speedups``.

Wheels get the compiled module (and a platform tag); an editable install
(``pip install -e .``) compiles it in place, next to the sources in
``src/aperion_event_bus/`` (gitignored), where the editable import finds it.
When compilation is impossible (no compiler, no Python headers, an unsupported
platform) the build prints one warning and the package stays pure Python.
``APERION_EVENT_BUS_NO_EXTENSIONS=1`` skips the compilation (and, at runtime,
the use of an already-built module).

Run ``python hatch_build.py`` to compile in place without reinstalling.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "src" / "aperion_event_bus"
SOURCE = PACKAGE / "_speedups.c"
MODULE = "_speedups"
ENV_DISABLE = "APERION_EVENT_BUS_NO_EXTENSIONS"


def disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "") not in ("", "0")


def suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def in_place_path() -> Path:
    return PACKAGE / f"{MODULE}{suffix()}"


def stale_modules() -> list[Path]:
    """Compiled modules in the source tree (any interpreter's suffix)."""
    return [p for p in PACKAGE.glob(f"{MODULE}.*") if p.suffix in (".so", ".pyd")]


def compile_extension(target: Path) -> str | None:
    """Compile ``_speedups.c`` into ``target``; None on success, else why it failed."""
    if sys.platform == "win32":
        return "building the C accelerator is not supported on Windows yet"
    include = sysconfig.get_paths().get("include")
    if not include or not (Path(include) / "Python.h").exists():
        return f"the Python headers (Python.h) are not installed (looked in {include})"
    ldshared = sysconfig.get_config_var("LDSHARED")
    if not ldshared:
        return "the interpreter reports no shared-library linker (LDSHARED)"
    command = shlex.split(os.environ.get("LDSHARED", ldshared))
    if shutil.which(command[0]) is None:
        return f"no C compiler found ({command[0]!r} is not on PATH)"
    cflags = [
        *shlex.split(sysconfig.get_config_var("CCSHARED") or ""),
        "-O2",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-missing-field-initializers",
        "-fno-strict-aliasing",
        f"-I{include}",
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=suffix(), dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        run = subprocess.run(
            [*command, *cflags, str(SOURCE), "-o", str(tmp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            return f"the C compiler failed:\n{run.stdout}{run.stderr}"
        os.replace(tmp, target)  # atomic: a process that loaded the old module keeps it
    except OSError as exc:
        return f"the C compiler could not run: {exc}"
    finally:
        if tmp.exists():
            tmp.unlink()
    return None


def warn(reason: str) -> None:
    print(
        f"WARNING: aperion-event-bus: the optional C accelerator was not built ({reason}); "
        "the package works in pure Python (slower publish).",
        file=sys.stderr,
    )


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # running as a script outside a build
    BuildHookInterface = object  # type: ignore[misc,assignment]


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compiles ``_speedups`` for the wheel target (standard and editable)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        if disabled():
            if editable:  # never leave a module built from other sources behind
                for path in stale_modules():
                    path.unlink()
            print(f"aperion-event-bus: {ENV_DISABLE} is set: pure-Python build", file=sys.stderr)
            return
        if editable:
            target = in_place_path()
            for path in stale_modules():  # another interpreter's build, or a stale one
                if path != target:
                    path.unlink()
        else:
            self._scratch = tempfile.mkdtemp(prefix="aperion-speedups-")
            target = Path(self._scratch) / f"{MODULE}{suffix()}"
        failed = compile_extension(target)
        if failed is not None:
            if editable and target.exists():
                target.unlink()  # do not keep running a module built from older sources
            warn(failed)
            return
        if not editable:
            build_data["force_include"][str(target)] = f"aperion_event_bus/{target.name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def get_build_hook() -> type:
    return SpeedupsBuildHook


if __name__ == "__main__":
    problem = compile_extension(in_place_path())
    if problem is not None:
        warn(problem)
        sys.exit(1)
    print(f"built {in_place_path().relative_to(ROOT)}")
