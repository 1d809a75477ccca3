"""The ``darknet-prn`` command line. Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches and turns
:class:`DarknetError` into a one-line message with exit status 2.

Exit status, for every command: 0 everything worked, 1 some inputs failed (each reported on stderr; the others
were processed), 2 bad usage or input that stops the command (a one-line error), 130 interrupted."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .errors import DarknetError
from .threads import configure_process

# name -> (module, one-line help)
COMMANDS = {
    "detect": ("darknet_prn.detect", "detect objects in images, directories or videos (like darknet detector test)"),
    "summary": ("darknet_prn.summary", "print the layer table, BFLOPs and weights size of a cfg"),
    "export": ("darknet_prn.export_cli", "export a model to ONNX"),
    "quantize": ("darknet_prn.quantize", "int8 post-training quantization to ONNX, calibrated on a .data set"),
    "convert-cfg": ("darknet_prn.convert", "convert [partial_shortcut] <-> stock Darknet cfg sections"),
    "map": ("darknet_prn.evaluation", "mean average precision on a labelled list (like darknet detector map)"),
    "valid": ("darknet_prn.valid", "COCO results JSON, optionally scored with pycocotools (darknet detector valid)"),
    "calc-anchors": ("darknet_prn.anchors", "k-means anchors for a dataset (like darknet detector calc_anchors)"),
    "partial": ("darknet_prn.partial", "the first N layers' weights, e.g. yolov4.conv.137 (like darknet partial)"),
    "synth": ("darknet_prn.train.synthetic", "write a synthetic detection dataset in Darknet's format"),
    "train": ("darknet_prn.train.trainer", "train a detector on a Darknet dataset (like darknet detector train)"),
    "augment": ("darknet_prn.train.preview", "draw augmented training samples with their boxes (a grid image)"),
}


def _format_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def build_parser(argv_cmd: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darknet-prn", description="Run Darknet models (cfg + .weights) in PyTorch.")
    parser.add_argument("--version", action="version", version=f"darknet-prn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if argv_cmd in (None, name):
            # only import the module of the command being run (torch stays out of `summary`)
            try:
                module = importlib.import_module(mod)
            except ImportError:
                if argv_cmd == name:
                    raise
                continue
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_process()          # OpenMP's wait policy for this machine's load: before any command imports torch
    warnings.formatwarning = _format_warning
    cmd = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(cmd if cmd in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DarknetError as e:
        print(f"darknet-prn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (MemoryError, RuntimeError) as e:   # an allocation past the limits.py estimate: one line, no traceback
        from .limits import is_allocation_error
        if not is_allocation_error(e):
            raise
        print(f"darknet-prn {args.command}: error: {out_of_memory(e)}", file=sys.stderr)
        return 2


def out_of_memory(e: BaseException) -> str:
    """One line for an allocation that failed at run time (the model or the images need more memory than the
    machine gives this process; ``DARKNET_PRN_MAX_MEMORY`` sets the limit checked before allocating)."""
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return (f"out of memory while running ({first or type(e).__name__}); use a smaller --width/--height or "
            f"--batch-size, or free memory")


if __name__ == "__main__":
    sys.exit(main())
