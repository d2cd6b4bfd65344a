"""Which frameworks this environment has, and a clear ImportError when a glue module's is missing."""
import importlib.util
import sys

from . import FRAMEWORKS, PACKAGES


def _missing(key):
    """The packages framework `key` needs that cannot be imported here."""
    return [p for p in dict.fromkeys(PACKAGES[key]) if p and importlib.util.find_spec(p) is None]


def installed():
    """The glue modules whose framework can be imported here."""
    return [f"{__package__}.{key}" for key in FRAMEWORKS if not _missing(key)]


def require(key):
    """Raises ImportError naming what to install, and the glue modules usable instead, when `key`'s
    framework is missing."""
    missing = _missing(key)
    if not missing:
        return
    usable = [m for m in installed() if m != f"{__package__}.{key}"]
    instead = (f"; or use a glue module whose framework is installed here: {', '.join(usable)}" if usable
               else "; no other glue module's framework is installed here either")
    raise ImportError(
        f"{__package__}.{key} needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}, "
        f"which this Python ({sys.executable}) cannot import: pip install {' '.join(missing)}"
        f"{instead}",
        name=missing[0],
    )
