"""Reading pickled *data* without running code from it.

Some data formats are pickles (torchvision's CIFAR-10 / CIFAR-100 batches). `pickle.load` on such a
file runs whatever callable the file names, so a crafted batch runs its payload. `load_plain` reads
a pickle with an unpickler that admits only the plain values these formats hold: dicts, lists,
tuples, strings, bytes, numbers, and numpy arrays (numpy's array reconstruction, `ndarray`, `dtype`,
scalars). Any other global the file names is refused with one line, before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from bench.errors import UserError

# (module, name) the unpickler may look up: what a numpy array or a plain builtin pickles to
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "bytes"),
    ("builtins", "bytearray"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("_codecs", "encode"),  # how protocol-2 pickles (Python 2's CIFAR files) store byte strings
}


class Refused(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED."""


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise Refused(f"{module}.{name}")
        return super().find_class(module, name)


def load_plain(path: Path, what: str = "data file"):
    """The plain value pickled in `path` (`what` names it in errors): dicts, lists, strings, numbers and
    numpy arrays only; a file that names anything else, or is not a pickle, is a one-line UserError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return PlainUnpickler(f, encoding="latin1").load()
    except Refused as e:
        raise UserError(f"{path}: refused to read this {what}: it names {str(e)!r}, which plain data (dicts, lists, "
                        "numbers, numpy arrays) never does; a pickle can run code, so only plain values are read. "
                        "Convert trusted files with numpy (np.savez) and pass the .npz") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, UnicodeDecodeError, OverflowError) as e:
        text = str(e).splitlines()[0][:120] if str(e) else ""
        raise UserError(f"{path}: not a readable {what} ({type(e).__name__}{': ' + text if text else ''})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read this {what} ({e.strerror or type(e).__name__})") from None
