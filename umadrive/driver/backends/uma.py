"""The UMA backend: one loaded predict unit answering every structure of a step
in ONE ``predict`` call. The template gives the atomic numbers; task, charge and
spin are fixed for the process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import ase
import ase.io
import torch

from umadrive.driver.backends.options import UmaOptions, choose_task
from umadrive.model.calculator import default_spin
from umadrive.model.compile_cache import KernelCache
from umadrive.model.compiling import Progress, WarmUp
from umadrive.model.predictor import PredictUnit, System, get_predict_unit
from umadrive.model.settings import PRESETS, InferenceSettings, InferenceSettingsError
from umadrive.structure import Prediction, Structure

log = logging.getLogger("umadrive.driver")

#: CPU priority (nice value) of the compile helper process: the lowest.
HELPER_NICENESS = 19

def inference_settings(mode: str) -> InferenceSettings:
    """``--mode``: a preset name, or the path of a JSON object of
    :class:`InferenceSettings` fields (see :meth:`InferenceSettings.from_dict`)."""
    if mode in PRESETS:
        return InferenceSettings.preset(mode)
    if not Path(mode).is_file():
        raise ValueError(f"--mode {mode!r}: expected {' or '.join(sorted(PRESETS))}, or the path "
                         "of a JSON file of inference settings (no such file)")
    try:
        return InferenceSettings.from_json(mode)
    except InferenceSettingsError as error:
        raise ValueError(f"--mode {mode!r}: {error}") from None


def torch_device(name: str) -> torch.device:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, checked against what torch sees."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name!r}: torch {torch.__version__} sees no CUDA device; "
                             "use --device cpu or install a CUDA build of torch")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name!r}: only cuda:0..cuda:{count - 1} exist")
    elif device.type != "cpu":
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    return device


class UmaBackend:
    """A UMA predict unit for the template's species (atom order as in the
    template); every ``compute`` is one ``predict`` call."""

    def __init__(self, unit: PredictUnit, template: ase.Atoms, *, task: str, charge: int,
                 spin: int, name: str, model: str | None = None, mode: str | None = None) -> None:
        self.name = name
        # how to load the same unit again (the compile helper process); None: unknown
        self._model, self._mode = model, mode
        self._helper: subprocess.Popen | None = None  # the compile helper process
        self.unit = unit
        self._numbers = template.numbers.copy()
        self._task = task
        self._charge = charge
        self._spin = spin
        self._template = Structure.from_atoms(template)
        self._warm_up: WarmUp | None = None
        # refuses unknown elements, task, charge or spin now rather than at the first request
        unit.batch([self._system(self._template)])

    @classmethod
    def load(cls, model: str, template: ase.Atoms, options: UmaOptions) -> UmaBackend:
        """Loads ``model`` (checkpoint path or name) once, reporting progress."""
        settings = inference_settings(options.mode)
        device = torch_device(options.device)
        log.info("loading UMA model %s on %s (mode %s)...", model, device, options.mode)
        start = time.perf_counter()
        try:
            unit = get_predict_unit(model, device, settings, memory_budget=options.memory_budget)
        except FileNotFoundError as error:
            raise ValueError(f"--model {model!r}: {error}; or use 'ase:emt' / "
                             "'ase:package.module:Class' for an ASE calculator") from None
        except InferenceSettingsError as error:
            raise ValueError(f"--mode {options.mode!r} with --memory-budget: {error}") from None
        datasets = list(unit.datasets)
        log.info("loaded %s in %.1f s: %d parameters, tasks %s", model,
                 time.perf_counter() - start, sum(p.numel() for p in unit.model.parameters()),
                 datasets)
        task = choose_task(model, datasets, options.task)
        spin = options.spin if options.spin is not None else default_spin(task)
        return cls(unit, template, task=task, charge=options.charge, spin=spin,
                   name=f"{Path(model).name} ({task})", model=model, mode=options.mode)

    def _system(self, structure: Structure) -> System:
        return System(numbers=self._numbers, structure=structure, task=self._task,
                      charge=self._charge, spin=self._spin)

    def compute(self, structures: Sequence[Structure]) -> list[Prediction]:
        return self.unit.predict([self._system(s) for s in structures])

    @property
    def compiles(self) -> bool:
        """Whether the inference settings compile the model (a warm-up pays off)."""
        return self.unit.settings.compile

    @property
    def compiling(self) -> bool:
        """Whether a background compile is still running."""
        return self._warm_up is not None and not self._warm_up.done

    def warm_up(self, *, background: bool, progress: Progress | None = None) -> WarmUp:
        """Compiles the model on the template (see :meth:`PredictUnit.warm_up`), with
        kernels from and into the cache under ``$UMADRIVE_CACHE/compiled``; with
        ``background``, ``compute`` answers uncompiled until it is done, and a
        model not in the cache is compiled by ``umadrive compile`` in a helper
        process at the lowest CPU priority (:meth:`compile_in_helper_process`),
        then loaded. Once per backend: later calls return the first warm-up."""
        if self._warm_up is None:
            helper = self.compile_in_helper_process if background and self._model else None
            self._warm_up = self.unit.warm_up([self._system(self._template)],
                                              background=background, cache=KernelCache(),
                                              progress=progress, fill_cache=helper)
        return self._warm_up

    def compile_in_helper_process(self) -> None:
        """Runs ``umadrive compile`` for this model, template, task, charge, spin,
        mode, device and torch thread count (the cache entry's key) in a child
        process at the lowest CPU priority (nice 19), and waits for it. The child
        uses the cores only when answering leaves them idle, and never this
        process's interpreter lock, which a compile in a thread holds for long
        stretches. :meth:`stop_compiling` ends it. Failures are logged; the
        warm-up then compiles in this process."""
        with tempfile.TemporaryDirectory(prefix="umadrive-compile-") as folder:
            structure = Path(folder) / "template.extxyz"
            ase.io.write(structure, ase.Atoms(numbers=self._numbers,
                                              positions=self._template.positions,
                                              cell=self._template.cell, pbc=self._template.pbc))
            command = [sys.executable, "-m", "umadrive", "compile", "--model", self._model,
                       "--structure", str(structure), "--task", self._task,
                       "--charge", str(self._charge), "--spin", str(self._spin),
                       "--mode", self._mode, "--device", str(self.unit.device)]
            environment = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
            errors = Path(folder) / "compile.log"  # a file: the child may outlive this process
            with errors.open("w") as stream:
                self._helper = child = subprocess.Popen(
                    command, env=environment, stdout=subprocess.DEVNULL, stderr=stream)
            try:
                os.setpriority(os.PRIO_PROCESS, child.pid, HELPER_NICENESS)
            except (OSError, AttributeError):  # no priorities here (Windows)
                pass
            log.info("compiling the model in a helper process (pid %d, nice %d); answering "
                     "uncompiled meanwhile", child.pid, HELPER_NICENESS)
            child.wait()
            lines = [line for line in errors.read_text(errors="replace").splitlines()
                     if line.strip()][-3:]
        if child.returncode < 0:  # stopped (stop_compiling)
            return
        if child.returncode != 0:
            log.warning("the compile helper process failed (exit %d): %s; compiling here "
                        "instead", child.returncode, " | ".join(lines))

    def stop_compiling(self) -> None:
        """Ends the compile helper process if it still runs (nothing is cached)."""
        helper = self._helper
        if helper is not None and helper.poll() is None:
            helper.terminate()
            log.info("stopped the compile helper process (pid %d)", helper.pid)

    def device_memory_bytes(self) -> int | None:
        device = self.unit.device
        if device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(device))
