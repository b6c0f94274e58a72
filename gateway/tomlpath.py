"""Find the line of a TOML key path, so config errors can point at partners.toml:LINE.

tomllib keeps no positions; this scans table headers and keys the way TOML defines
them (absolute headers, array-of-tables append) and is only used to decorate errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PathPart = str | int
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _names(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in dotted.split(".")]


def format_path(path: Sequence[PathPart]) -> str:
    """Render ["partners", 2, "keys", 0, "id"] as partners[2].keys[0].id."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def locate(text: str, path: Sequence[PathPart]) -> int | None:
    """Return the 1-based line that best matches path: the longest prefix defined."""
    want = list(path)
    arrays: dict[tuple[PathPart, ...], int] = {}
    current: list[PathPart] = []
    best: tuple[int, int] | None = None  # (matched length, line)

    def concrete(names: list[str]) -> list[PathPart]:
        out: list[PathPart] = []
        for name in names:
            out.append(name)
            count = arrays.get(tuple(out))
            if count:
                out.append(count - 1)
        return out

    def consider(found: list[PathPart], lineno: int) -> None:
        nonlocal best
        if want[: len(found)] == found and (best is None or len(found) > best[0]):
            best = (len(found), lineno)

    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = _names(header.group(2))
            if header.group(1) == "[[":
                parent = concrete(names[:-1])
                key = (*parent, names[-1])
                arrays[key] = arrays.get(key, 0) + 1
                current = [*key, arrays[key] - 1]
            else:
                current = concrete(names)
            consider(current, lineno)
            continue
        key_match = _KEY.match(line)
        if key_match and not line.lstrip().startswith("#"):
            consider([*current, *_names(key_match.group(1))], lineno)
    return best[1] if best else None
