"""``umadrive plot RUN``: a PNG of a run's potential energy, temperature against
its target, conserved-quantity drift and the driver's time per step, from a run
folder (``umadrive demo``'s, or any i-PI run), an i-PI properties file or a
``umadrive serve --log-json`` file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_FOLDER_OR_FILE",
                        help="a run folder, an i-PI properties file (*.out) or a --log-json file")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="PNG to write (default: RUN/run.png for a folder, else RUN.png)")


def default_png(run: Path) -> Path:
    return run / "run.png" if run.is_dir() else run.with_name(run.name + ".png")


def run(args: argparse.Namespace) -> int:
    from umadrive.plots import RunDataError, read_run, write_png

    run_path = Path(args.run)
    try:
        png = write_png(read_run(run_path), args.output or default_png(run_path))
    except (RunDataError, OSError) as error:
        print(f"umadrive plot: {error}", file=sys.stderr)
        return 2
    print(f"wrote {png}")
    return 0
