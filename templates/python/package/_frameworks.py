"""Which frameworks this environment has, and a clear ImportError when a glue module's is missing."""
import importlib
import importlib.util
import sys


def _missing(package, key):
    """The packages framework `key` of the op package `package` needs that cannot be imported here."""
    return [p for p in dict.fromkeys(package.PACKAGES[key]) if p and importlib.util.find_spec(p) is None]


def installed(op_package):
    """The glue modules of `op_package` (e.g. "mha_glue.multihead_attention") whose framework can be
    imported here."""
    package = importlib.import_module(op_package)
    return [f"{op_package}.{key}" for key in package.FRAMEWORKS if not _missing(package, key)]


def require(op_package, key):
    """Raises ImportError naming what to install, and the glue modules usable instead, when the
    framework of `op_package`'s glue module `key` is missing."""
    package = importlib.import_module(op_package)
    missing = _missing(package, key)
    if not missing:
        return
    usable = [m for m in installed(op_package) if m != f"{op_package}.{key}"]
    instead = (f"; or use a glue module whose framework is installed here: {', '.join(usable)}" if usable
               else "; no other glue module's framework is installed here either")
    raise ImportError(
        f"{op_package}.{key} needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}, "
        f"which this Python ({sys.executable}) cannot import: pip install {' '.join(missing)}"
        f"{instead}",
        name=missing[0],
    )
