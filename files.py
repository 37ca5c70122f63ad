"""Files written whole and read with checks: every file a run writes goes through `write_atomically` (a temporary
file, fsync, read back, then replaced, so a full disk or a kill leaves the previous file, and `DiskFullError`
says what space was needed); torch files are read through `read_torch_file` (every zip record's CRC checked before
torch unpickles anything) and JSON through `read_json` (size and nesting limits). Each failure is one line that
names the file. runs.py builds the run folder on these.
"""

import errno
import hashlib
import io
import json
import os
import shutil
import zipfile

import torch


class DiskFullError(OSError):
    """A file could not be written for want of space. The previous file, if any, is left as it was; the message
    names the file, the space it needs and the space free."""

    def __init__(self, path: str, needed: int | None, existed: bool, what: str | None = None):
        free = free_bytes(path)
        need = f"it needs {'more than ' if needed is None or needed < 0 else ''}{human_size(abs(needed or 0))}"
        free = f"{human_size(free) if free is not None else 'an unknown amount'} is free on that disk"
        super().__init__(errno.ENOSPC, f"not enough space: {what} {path}, and only {free}; nothing was written"
                         if what else f"no space left to write {path}: {need} and {free}; "
                         f"{'the previous file is kept as it was' if existed else 'nothing was written'}")
        self.filename = path

    def __str__(self):
        return self.strerror


def human_size(n: int) -> str:
    """A size for people: 812 bytes, 4.1 KB, 3.0 MB, 12.4 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def free_bytes(path: str) -> int | None:
    """The bytes free on the disk that holds `path` (or its nearest existing folder); None if unknown."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _no_space(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: into a temporary file, flushed to the disk and read back to
    check it, then moved over `path`. An interrupted or failed write leaves the previous file (or none) and no
    temporary file; a full disk is a DiskFullError that says how much space the file needs."""
    existed, tmp = os.path.exists(path), f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp, "rb") as f:
            if f.read() != data:
                raise OSError(errno.EIO, f"{path} reads back differently from what was written: the disk may be "
                                         "failing; the previous file is kept")
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)  # first: the free space reported is then what the file can have
        if _no_space(e):
            raise DiskFullError(path, len(data), existed) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_atomically(path: str, write) -> None:
    """Write a file through `write(tmp_path)` and move it into place, so that an interrupted write leaves the
    old file (or none), never a half-written one; the temporary file is removed whatever happens, and a full
    disk is a DiskFullError. (What the run writes itself goes through `write_atomically`.)"""
    existed, tmp = os.path.exists(path), f"{path}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if _no_space(e):
            written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
            if os.path.exists(tmp):
                os.remove(tmp)
            raise DiskFullError(path, -written, existed) from None  # needs more than what got written
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def torch_bytes(obj) -> bytes:
    """What torch.save writes for `obj`, in memory: written with `write_atomically`, a full disk is an OSError
    that says so (torch.save into a file on a full disk raises a RuntimeError that does not)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def first_line(e: BaseException) -> str:
    """An exception as one short line, its type and the start of its message (some, such as torch's EOFError on an
    empty file, have no message at all)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:120]}" if text else type(e).__name__


def read_torch_file(path: str, what: str, advice: str):
    """The object in a file torch.save wrote, loaded with weights_only=True (tensors, numbers, strings, lists and
    dicts: no pickled code). torch.load itself reads a damaged file without noticing (it checks no checksums), so
    the file's zip records are checked against their CRC-32 first: a file cut short, or with a byte changed, is a
    ValueError naming the file, never wrong numbers."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # BadZipFile, and whatever a damaged header makes zipfile raise
        size = os.path.getsize(path)
        raise ValueError(f"{path} is not a readable {what} ({'0 bytes' if size == 0 else first_line(e)}): it may "
                         f"be truncated or damaged; {advice}") from None
    if bad is not None:
        raise ValueError(f"{path} is damaged: its record {bad} does not match its checksum; {advice}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled code, or a file that is a zip but not torch's
        raise ValueError(f"{path} is not a readable {what} ({first_line(e)}); {advice}") from None


def json_depth(value) -> int:
    """How deeply lists and dicts nest in a JSON value (0 for a number or a string), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; anything larger is not one


MAX_JSON_DEPTH = 8  # a config nests 1 level, a fingerprint 2: anything deeper is not one of ours


def read_json(path: str, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """A JSON object from a file, checked before anything is built from it: present, at most max_bytes,
    valid JSON, an object nested at most MAX_JSON_DEPTH deep. Every failure is a ValueError (FileNotFoundError if
    missing) naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: a run folder needs its {what}")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"{path} is {size:,} bytes, more than the {max_bytes:,} a {what} can be: not a {what}")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: not a {what}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
                         f"a damaged {what}") from None
    except RecursionError:
        raise ValueError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a {what}") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{path} is not a {what} ({first_line(e)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object: not a {what}")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a {what}")
    return value


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
