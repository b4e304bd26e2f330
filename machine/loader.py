"""Finding a machine from a target: `path/to/file.py[:name]` or `package.module[:name]`,
and the target of a machine already imported (`locate`, for `machine.run`).

The target is recorded with the run, as an absolute path or a module name, so `journal resume`
finds the code again; the hash of the file is recorded too, so a resume under changed code is
noticed and reported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from runjournal.machine.definition import Machine
from runjournal.machine.errors import TargetLoadError, TargetNotFound


@attrs.frozen
class Target:
    """A machine, where its code lives (`location`, as recorded) and a hash of that code."""

    machine: Machine[Any]
    location: str
    code_hash: str


def load(target: str) -> Target:
    """Import the code named by `target` and find the machine in it."""
    spec, _, name = target.partition(":")
    if spec.endswith(".py") or "/" in spec:
        module, source = _import_path(spec)
        location_spec = str(source)
    else:
        module, source = _import_module(spec)
        location_spec = spec
    name, machine = _find_machine(module, name, target)
    machine.check()
    return Target(machine, f"{location_spec}:{name}", _hash(source))


def locate(machine: Machine[Any]) -> Target:
    """The target of a machine already imported: where `journal resume` will find its code.

    A machine of a script (`python pipeline.py`) or of a top-level module is recorded by the
    absolute path of its file, so a resume from any folder finds it; one in a package, by the
    module's name, as `journal run package.module` would record it.
    """
    module = sys.modules.get(machine.module or "")
    source = getattr(module, "__file__", None)
    if module is None or source is None:
        msg = (
            f"machine {machine.name!r} was not made in a module with a source file: "
            "define it in a .py file to run it"
        )
        raise TargetLoadError(msg)
    path = Path(source).resolve()
    dotted = machine.module is not None and "." in machine.module
    spec = machine.module if dotted and machine.module != "__main__" else str(path)
    names = [name for name, value in vars(module).items() if value is machine]
    location = f"{spec}:{names[0]}" if names else str(spec)
    return Target(machine, location, _hash(path))


def _hash(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()[:12]


def _import_path(spec: str) -> tuple[ModuleType, Path]:
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        msg = f"no file {spec}: give a pipeline as path/to/file.py[:machine] or module[:machine]"
        raise TargetNotFound(msg)
    module_name = f"_journal_target_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name], path
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        msg = f"cannot import {spec}: not a Python file"
        raise TargetLoadError(msg)
    module = importlib.util.module_from_spec(import_spec)
    # As `python file.py` would: the file's own folder comes first, for its sibling modules.
    sys.path.insert(0, str(path.parent))
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        msg = f"cannot import {spec}: {type(e).__name__}: {e}"
        raise TargetLoadError(msg) from e
    return module, path


def _import_module(spec: str) -> tuple[ModuleType, Path]:
    if "" not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does: modules of the current folder
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name is not None and spec.startswith(e.name):
            msg = f"no module {spec}: give a pipeline as path/to/file.py or module[:machine]"
            raise TargetNotFound(msg) from e
        msg = f"cannot import {spec}: {type(e).__name__}: {e}"
        raise TargetLoadError(msg) from e
    except Exception as e:
        msg = f"cannot import {spec}: {type(e).__name__}: {e}"
        raise TargetLoadError(msg) from e
    if module.__file__ is None:
        msg = f"{spec} has no source file to record"
        raise TargetLoadError(msg)
    return module, Path(module.__file__)


def _find_machine(module: ModuleType, name: str, target: str) -> tuple[str, Machine[Any]]:
    if name:
        found = getattr(module, name, None)
        if not isinstance(found, Machine):
            msg = f"{target}: {name!r} is not a Machine in that file"
            raise TargetLoadError(msg)
        return name, found
    machines = {n: v for n, v in vars(module).items() if isinstance(v, Machine)}
    if len(machines) == 1:
        return next(iter(machines.items()))
    if not machines:
        msg = f"{target} defines no Machine"
        raise TargetLoadError(msg)
    msg = f"{target} defines several machines ({', '.join(machines)}): name one, as {target}:NAME"
    raise TargetLoadError(msg)
