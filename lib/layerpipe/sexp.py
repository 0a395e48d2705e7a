"""A small, safe reader for the s-expressions Guix writes (a profile's manifest).

Data only, never evaluated: lists, strings, symbols, integers, #t/#f and
keywords (#:name), `;` comments, and quote marks read as (quote x).  A dotted
pair `(a . (b c))` reads as the list it is, `(a . b)` as [a, Dot, b].  Input
size and nesting are bounded, so a hostile file cannot exhaust memory or the
stack.
"""
import re

from .errors import LayerpipeError

MAX_DEPTH = 200
MAX_BYTES = 64 << 20


class Symbol(str):
    """A Scheme symbol, told apart from a string."""

    def __repr__(self) -> str:
        return f"Symbol({str(self)!r})"


class Keyword(str):
    def __repr__(self) -> str:
        return f"Keyword({str(self)!r})"


DOT = Symbol(".")
_TOKEN = re.compile(r"""\s+|;[^\n]*|#\|.*?\|#|[()']|"(?:[^"\\]|\\.)*"|[^\s()'";]+""", re.S)
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "f": "\f", "v": "\v", "0": "\0",
            "\\": "\\", '"': '"', "\n": ""}


def _string(body: str, where: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":  # \xNN; as Guile writes non-printing characters
            end = body.find(";", i)
            digits = body[i + 2:end] if end > 0 else ""
            if not _HEX.fullmatch(digits) or int(digits, 16) > 0x10FFFF:
                raise LayerpipeError("bad \\x escape in a string", where)
            out.append(chr(int(digits, 16)))
            i = end + 1
            continue
        if nxt not in _ESCAPES:
            raise LayerpipeError(f"unknown escape \\{nxt} in a string", where)
        out.append(_ESCAPES[nxt])
        i += 2
    return "".join(out)


def _atom(text: str, where: str):
    if text in ("#t", "#true"):
        return True
    if text in ("#f", "#false"):
        return False
    if text.startswith("#:"):
        return Keyword(text[2:])
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if text.startswith("#"):
        raise LayerpipeError(f"unsupported syntax {text[:20]!r}", where)
    return Symbol(text)


def read(text: str, where: str = "s-expression"):
    """The first datum of TEXT."""
    if len(text) > MAX_BYTES:
        raise LayerpipeError(f"larger than {MAX_BYTES} bytes", where)
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith((";", "#|"))]
    if "".join(_TOKEN.findall(text)) != text:
        raise LayerpipeError("not an s-expression (an unterminated string?)", where)
    stack: list[list] = []
    for i, tok in enumerate(tokens):
        if tok == "(":
            if len(stack) >= MAX_DEPTH:
                raise LayerpipeError(f"nested deeper than {MAX_DEPTH}", where)
            stack.append([])
            continue
        if tok == ")":
            if not stack:
                raise LayerpipeError("unbalanced ')'", where)
            value = _undot(stack.pop())
        elif tok == "'":
            stack.append([Symbol("quote"), _QUOTE])
            continue
        elif tok.startswith('"'):
            value = _string(tok[1:-1], where)
        else:
            value = DOT if tok == "." else _atom(tok, where)
        while stack and stack[-1][-1:] == [_QUOTE]:  # 'x -> (quote x)
            stack[-1][-1] = value
            value = stack.pop()
        if not stack:
            return value
        stack[-1].append(value)
    raise LayerpipeError("unexpected end (unbalanced '(')", where)


_QUOTE = object()


def _undot(items: list) -> list:
    if len(items) >= 3 and items[-2] is DOT and isinstance(items[-1], list):
        return items[:-2] + items[-1]
    return items
