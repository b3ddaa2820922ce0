"""The `eie` command. Each subcommand module registers its own parser: the pruning steps here
(`eie.cli.pruning`), the chip's commands beside the code they drive in `eie.cosim`; heavy imports (torch,
amaranth, cocotb) happen inside the commands so `eie --help` stays fast."""

import argparse
import sys

from eie.errors import EieError

# Modules with a `register(subparsers)` function, in the order `eie --help` lists them.
COMMAND_MODULES = ["eie.doctor", "eie.cli.pruning", "eie.cosim.commands", "eie.cosim.inference", "eie.cosim.lstm",
                   "eie.cosim.decoder", "eie.cosim.sweep", "eie.cosim.compare", "eie.cosim.cache", "eie.cosim.synth",
                   "eie.cosim.verify", "eie.cosim.suite"]


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line naming the problem (and `--help` for the rest), exit 2;
    options are never abbreviated. Subcommand parsers are of the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)   # `--data` must never be taken for `--data-dir`
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    import importlib
    parser = _Parser(
        prog="eie",
        description="Prune and compress PyTorch networks and run them bit-exact on a simulated "
                    "EIE-style sparse accelerator (Amaranth -> Verilog -> Verilator/cocotb).")
    from eie import __version__
    parser.add_argument("--version", action="version", version=f"eie {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Set when the command run as the program is done (see `_on_interrupt`), and when a Ctrl-C landed where it could
# not be raised (see `_unraisable`).
_DONE = False
_IGNORED_INTERRUPT = False


def main(argv=None):
    """The `eie` command on `argv` (default: the program's arguments); returns the exit status. Run as the
    program (`argv` None), a Ctrl-C once the command is done ends the process at once, as the system does
    (exit status 130), rather than as a traceback from the interpreter's teardown with status 0."""
    global _DONE
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    program = argv is None
    if program:
        import signal
        from eie.sw.runs import hold_until_exit
        hold_until_exit()
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:    # not where SIGINT is ignored
            signal.signal(signal.SIGINT, _on_interrupt)
            sys.unraisablehook = _unraisable
    try:
        status = args.func(args) or 0
        if _IGNORED_INTERRUPT:
            raise KeyboardInterrupt
        return status
    except EieError as e:
        print(f"eie {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eie {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if program:
            _DONE = True      # before any call, where a Ctrl-C could land: from here on `_on_interrupt` ends it


def _on_interrupt(signum, frame):
    """SIGINT for the program: while the command runs, a KeyboardInterrupt (it says 'interrupted'); once it is
    done, what was said is flushed and the system's default action ends the process (status 130), so that the
    interpreter's teardown (exit callbacks, objects freed, worker threads joined) never turns a Ctrl-C into a
    traceback."""
    import os
    import signal
    if not _DONE:
        raise KeyboardInterrupt
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):    # closed, or interrupted inside its own write
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _unraisable(info):
    """A Ctrl-C that landed in a callback Python cannot raise from (a weakref's, a `__del__`, as an object is
    freed while the command runs) is not lost in an 'Exception ignored' report: the command, which went on, then
    ends as interrupted (`_IGNORED_INTERRUPT`). Anything else as Python reports it."""
    global _IGNORED_INTERRUPT
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        _IGNORED_INTERRUPT = True
    else:
        sys.__unraisablehook__(info)


if __name__ == "__main__":
    sys.exit(main())
