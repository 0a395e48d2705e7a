"""What every command shares: `-` for stdin/stdout, atomic outputs, errors as
one line with an exit status, quiet ends on closed pipes, progress on TTYs.

Exit statuses: 0 ok, 1 error, 2 usage, 130 interrupted (SIGINT), 141 the
reader of stdout went away (as a shell reports a SIGPIPE death), 143 SIGTERM.
"""
import os
import re
import signal
import sys
import tempfile
import traceback
from contextlib import contextmanager
from typing import IO, Callable, Iterator

import typer

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from .errors import LayerpipeError, UsageError

EXIT_ERROR, EXIT_USAGE, EXIT_SIGINT, EXIT_PIPE, EXIT_SIGTERM = 1, 2, 130, 141, 143


def make_app(help_text: str) -> typer.Typer:
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]},
                       help=help_text)


_USERINFO = re.compile(r"(\w+://)[^/@\s]*@")
_SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|CREDENTIAL|AUTH|API_?KEY", re.IGNORECASE)


def redact(message: str) -> str:
    """MESSAGE without credentials: `user:password@` in URLs and the values of
    environment variables whose names say they are secret (of 4 characters or more)."""
    message = _USERINFO.sub(r"\1***@", message)
    for name, value in os.environ.items():
        if len(value) >= 4 and _SECRET_NAME.search(name) and value in message:
            message = message.replace(value, "***")
    return message


def _say(prog: str, message: str) -> None:
    try:
        sys.stderr.write(f"{prog}: {redact(message)}\n")
        sys.stderr.flush()
    except OSError:
        pass


def _on_sigterm(signum, frame):
    raise SystemExit(EXIT_SIGTERM)


def guard(prog: str, body: Callable[[], None]) -> None:
    """Run BODY; map every way it can end to one stderr line and an exit status."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    debug = os.environ.get("LAYERPIPE_DEBUG") == "1"
    status = 0
    try:
        body()
        sys.stdout.flush()
    except UsageError as exc:
        _say(prog, str(exc))
        status = EXIT_USAGE
    except LayerpipeError as exc:
        _say(prog, str(exc))
        status = EXIT_ERROR
    except BrokenPipeError:
        # Downstream closed (`| head -1`): stop quietly, as a SIGPIPE death would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_PIPE
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        status = EXIT_SIGINT
    except OSError as exc:
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
        _say(prog, f"{where}{exc.strerror or exc}")
        status = EXIT_ERROR
    except SystemExit:
        raise
    except Exception as exc:  # a bug: still one line, unless asked for more
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (LAYERPIPE_DEBUG=1 shows a traceback)"
        _say(prog, f"internal error: {type(exc).__name__}: {exc}{hint}")
        status = EXIT_ERROR
    raise SystemExit(status)


def open_input(path: str) -> tuple[IO[bytes], str]:
    """A binary stream for PATH (`-` is stdin) and the name errors should use."""
    if path == "-":
        return sys.stdin.buffer, "stdin"
    try:
        return open(path, "rb"), path
    except IsADirectoryError:
        raise LayerpipeError("is a directory", path) from None
    except OSError as exc:
        raise LayerpipeError(exc.strerror or str(exc), path) from None


def refuse_tty(stream: IO[bytes], what: str) -> None:
    if stream.isatty():
        raise UsageError(f"refusing to write {what} to a terminal; use -o FILE or a pipe")


@contextmanager
def atomic_file(path: str, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write PATH through a temp file in its folder, renamed into place on success."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        with signals_held():  # a ^C right after mkstemp still finds TMP to remove
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
            except OSError as exc:
                raise LayerpipeError(f"cannot write here: {exc.strerror}", path) from None
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            _unlink_quietly(tmp)
        raise


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block has run (in the main thread):
    a temp file made in it has its name kept before an interruption is
    raised, so the cleanup always finds it."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def output_stream(path: str, what: str) -> Iterator[IO[bytes]]:
    """stdout for `-` (refusing a terminal), else an atomic file."""
    if path == "-":
        refuse_tty(sys.stdout.buffer, what)
        yield sys.stdout.buffer
        return
    with atomic_file(path) as out:
        yield out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Progress:
    """A one-line byte counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, total: int, quiet: bool = False):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.enabled = not quiet and sys.stderr.isatty()
        self._shown = -1

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        pct = min(100, self.done * 100 // self.total)
        if pct != self._shown:
            self._shown = pct
            width = 30
            bar = "#" * (pct * width // 100)
            sys.stderr.write(f"\r{self.label} [{bar:<{width}}] {pct:3d}% {self.done >> 20} MiB")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._shown >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_app(app: typer.Typer, prog: str) -> None:
    """Run a stage's typer app; click's own usage errors become one line, exit 2."""
    try:
        app(prog_name=prog, standalone_mode=False)
    except click_exceptions.UsageError as exc:
        _say(prog, f"{exc.format_message()} (see '{prog} --help')")
        raise SystemExit(EXIT_USAGE) from None


def examples(*commands: str) -> str:
    """An `Examples:` epilog that click prints as written (\\b stops rewrapping)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {c}" for c in commands) + "\n"
