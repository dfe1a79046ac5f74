"""Add the element declaration to the committed demo checkpoint without
retraining: load ``umadrive/data/demo/uma-demo.pt``, set ``"elements"`` (the
symbols ``tools/make_demo_data.py`` trains on) in every task config, save it
again. Weights, configs and element references are unchanged; running it twice
changes nothing. ``tools/train_demo_model.py`` writes the declaration itself.

Usage::

    python tools/declare_demo_elements.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import make_demo_data
from umadrive.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from umadrive.model.domain import TASK_KEY

DEMO = Path(__file__).resolve().parent.parent / "umadrive" / "data" / "demo" / "uma-demo.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEMO)
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    tasks = [{**task, TASK_KEY: list(make_demo_data.ELEMENTS)} for task in checkpoint.tasks_config]
    save_checkpoint(args.checkpoint, Checkpoint(model_config=checkpoint.model_config,
                                                state_dict=checkpoint.state_dict,
                                                tasks_config=tasks, source="umadrive"))
    print(f"{args.checkpoint}: tasks {[t['name'] for t in tasks]} declare {TASK_KEY} "
          f"{list(make_demo_data.ELEMENTS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
