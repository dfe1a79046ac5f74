"""The predict unit: a loaded UMA model answering batches of systems.

``get_predict_unit(model, device, inference_settings)`` loads a checkpoint once;
``PredictUnit.predict(systems)`` returns one :class:`~umadrive.structure.Prediction`
per :class:`System`. The unit applies every :class:`InferenceSettings` field:

* ``merge_mole``: the experts are merged for the first batch's system (reduced
  composition, charge, spin, task) and merged again, with one log line, when a
  batch of another system arrives (``stats.merges`` counts the merges). A batch
  that mixes systems is evaluated with routed experts for that call, correctly,
  and leaves the merged weights as they are (``stats.routed_calls``).
* ``compile``: ``torch.compile(dynamic=True)`` of the backbone's message passing
  (:mod:`umadrive.model.compiling`); graph generation, charge/spin/task embeddings
  and the expert routing stay outside. The first call compiles, unless
  :meth:`PredictUnit.warm_up` did (optionally in the background, answering
  uncompiled meanwhile, and with kernels cached across processes). The first
  call's time is reported as ``stats.warmup_s``.
* ``activation_checkpointing``: when a step's edge activations would not fit in
  the unit's memory budget, a batch of several systems runs in groups of whole
  systems that fit, and a single system too big on its own in edge chunks that
  are recomputed in the backward pass; steps that fit run without recomputation
  (:mod:`umadrive.model.activation_memory` has the rule and the estimate).
* ``tf32``, ``wigner_cuda``: on CUDA only; elsewhere accepted and reported
  inactive (``active_settings()``).
* ``external_graph_gen``: ``predict(systems, graph=...)`` takes the caller's graph;
  without one the unit calls its ``graph_generator`` (default: vesin).
* ``internal_graph_gen_version``: the version of :func:`radius_graph` used.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from umadrive.model import activation_memory, edge_products
from umadrive.model.checkpoint import load_checkpoint
from umadrive.model.compile_cache import KernelCache, KernelKey
from umadrive.model.compiling import CompiledMessagePassing, Progress, WarmUp
from umadrive.model.cuda_modes import GraphedRotation, tf32_matmuls
from umadrive.model.devices import check_device
from umadrive.model.escn import CHARGE_OFFSET, CHARGE_ROWS, SPIN_OFFSET, SPIN_ROWS
from umadrive.model.domain import ElementDomain
from umadrive.model.graph import RadiusGraph, radius_graph, vesin_graph
from umadrive.model.merge import ExpertMerger, common_key
from umadrive.model.names import resolve_model
from umadrive.model.settings import InferenceSettings, InferenceSettingsError, resolve_settings
from umadrive.model.single_atoms import IsolatedAtomEnergies, is_isolated_atom
from umadrive.model.uma import UMA, AtomsBatch, RunOptions
from umadrive.structure import Prediction, Structure

log = logging.getLogger(__name__)

# distinct systems whose numbers, task, charge and spin were checked, kept at most
_SPECIES_CACHE = 256

GraphGenerator = Callable[..., RadiusGraph]
"""A function with :func:`umadrive.model.graph.radius_graph`'s signature."""

#: The charges and spins the model's embedding tables have rows for.
CHARGE_RANGE = (-CHARGE_OFFSET, CHARGE_ROWS - 1 - CHARGE_OFFSET)
SPIN_RANGE = (-SPIN_OFFSET, SPIN_ROWS - 1 - SPIN_OFFSET)


class InvalidSystemError(ValueError):
    """A system the model cannot evaluate (unknown task, element, charge or spin,
    or an element outside the elements the model declares it was trained on)."""


@dataclass(frozen=True)
class System:
    """One system to evaluate.

    numbers: (n,) int atomic numbers. structure: positions (n, 3) Å, cell rows,
    pbc. task: the dataset whose conventions to predict ("omat", "omol", ...).
    charge: total charge (e). spin: spin multiplicity 2S+1 (0 = unset).
    """

    numbers: np.ndarray
    structure: Structure
    task: str
    charge: int
    spin: int


def _species_key(system: System) -> tuple:
    """What the once-per-system checks depend on: the numbers' bytes, task, charge
    and spin (``repr`` so that 1, 1.0 and True stay apart)."""
    numbers = np.asarray(system.numbers)
    return (numbers.dtype.str, numbers.shape, numbers.tobytes(), system.task,
            repr(system.charge), repr(system.spin))


def _check_species(where: str, system: System, unit: "PredictUnit") -> None:
    """The numbers, task, charge and spin of one system (positions: see ``batch``)."""
    numbers = np.asarray(system.numbers)
    if numbers.ndim != 1 or numbers.shape[0] == 0:
        raise InvalidSystemError(f"{where}: numbers must be a non-empty 1-d array, got shape "
                                 f"{numbers.shape}")
    if not np.issubdtype(numbers.dtype, np.integer):
        raise InvalidSystemError(f"{where}: numbers must be integers, got dtype {numbers.dtype}")
    max_z = unit.model.config.max_num_elements - 1
    bad = numbers[(numbers < 1) | (numbers > max_z)]
    if bad.size:
        raise InvalidSystemError(f"{where}: atomic number {int(bad[0])} is outside 1..{max_z}, "
                                 f"the elements this model knows")
    if system.task not in unit.datasets:
        raise InvalidSystemError(f"{where}: task {system.task!r} is not one of this model's "
                                 f"tasks {list(unit.datasets)}")
    outside = unit.element_domain.outside(numbers, system.task)
    if outside:
        raise InvalidSystemError(
            f"{where}: elements {', '.join(chemical_symbols[z] for z in outside)} are outside "
            f"the elements this model was trained on for task {system.task!r} "
            f"({unit.element_domain.describe(system.task)}); its answers there would be "
            "meaningless: use a model trained on them (e.g. a released UMA checkpoint)")
    for name, value, (low, high) in (("charge", system.charge, CHARGE_RANGE),
                                     ("spin", system.spin, SPIN_RANGE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidSystemError(f"{where}: {name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise InvalidSystemError(f"{where}: {name}={value} is outside [{low}, {high}]")


@dataclass
class PredictStats:
    """What a predict unit has done.

    calls: predict() calls. systems: systems evaluated. merges: expert merges
    (merge_mole). routed_calls: calls evaluated with routed experts although
    merge_mole is on (batches mixing systems). warmup_s: seconds of the first
    call (with compile and no :meth:`PredictUnit.warm_up`: the compile), None
    before it. wigner_captures: CUDA-graph captures of the Wigner matrices
    (wigner_cuda on CUDA).
    uncompiled_calls: calls answered without compile while a background
    warm-up compiled (compile only). split_calls: calls whose batch of systems
    exceeded the memory budget and was evaluated in groups of whole systems
    (nothing recomputed). checkpointed_calls: evaluations (a call, or one group
    of a split call) whose edge activations exceeded the memory budget and were
    recomputed in chunks (with activation_checkpointing; without it, those that
    would not fit in the free memory at all); see
    :mod:`umadrive.model.activation_memory` for both.
    """

    calls: int = 0
    systems: int = 0
    merges: int = 0
    routed_calls: int = 0
    warmup_s: float | None = None
    wigner_captures: int = 0
    uncompiled_calls: int = 0
    checkpointed_calls: int = 0
    split_calls: int = 0


class PredictUnit:
    """A UMA model on one device with fixed inference settings.

    The unit owns its model: ``unit.model`` is a private copy of the ``model``
    given, made when the unit is built, that shares the weights' storage (no
    memory for a second set of parameters) and nothing else. Everything the unit
    changes (autograd flags, activation-checkpointing chunks, merged experts,
    tables moved between devices) is changed on its copy, so the given model is
    left as it was and any number of units, with any settings, may be built on
    one model without affecting each other. In-place changes to the given
    model's weights (training) do reach the units; build new units after them,
    since merged experts are not merged again for the same system.

    graph_generator: builds the graph when ``settings.external_graph_gen`` is on
    and a call passes none (default :func:`~umadrive.model.graph.vesin_graph`).
    compile_backend: ``torch.compile``'s backend when ``settings.compile`` is on
    ("inductor"; "aot_eager" traces forward and backward without generating code,
    for debugging and quick tests).
    element_domain: the elements the model declares it was trained on, per task
    (default: no restriction); systems with others are refused.
    memory_budget: bytes a step's edge activations may take before activation
    checkpointing splits them into recomputed chunks (default: half the memory
    free on the device when the unit is built); only with
    ``activation_checkpointing``.
    """

    def __init__(self, model: UMA, *, device: torch.device, settings: InferenceSettings,
                 graph_generator: GraphGenerator | None = None,
                 compile_backend: str | Callable = "inductor",
                 element_domain: ElementDomain | None = None,
                 memory_budget: int | None = None) -> None:
        if graph_generator is not None and not settings.external_graph_gen:
            raise InferenceSettingsError(
                "a graph_generator was given but InferenceSettings.external_graph_gen=False; "
                "set external_graph_gen=True to use it")
        if memory_budget is not None:
            if not settings.activation_checkpointing:
                raise InferenceSettingsError(
                    "a memory_budget was given but InferenceSettings.activation_checkpointing="
                    "False: without checkpointing every activation is kept; turn it on or drop "
                    "the budget")
            if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) \
                    or memory_budget <= 0:
                raise InferenceSettingsError(
                    f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        self.model = model = _private_copy(model)
        self.device = device
        self.settings = settings
        self.element_domain = element_domain or ElementDomain()
        self.stats = PredictStats()
        self.memory_budget: int | None = None
        # without checkpointing: steps whose activations exceed this are chunked all the same
        self._memory_guard: int | None = None
        if settings.activation_checkpointing:
            self.memory_budget = memory_budget or activation_memory.default_budget(device)
        else:
            self._memory_guard = activation_memory.free_memory(device)
        self._bytes_per_edge = activation_memory.bytes_per_edge(model.backbone.config,
                                                                settings.base_precision_dtype)
        self._chunk: int | None = None
        self._last_split: tuple[int, int] | None = None  # (systems, groups) last logged
        self._guard_warned: int | None = None  # the chunk last warned about (no checkpointing)
        if settings.external_graph_gen:
            self.graph_generator = graph_generator or vesin_graph
        else:
            self.graph_generator = radius_graph
        self._merger = ExpertMerger(model) if settings.merge_mole else None
        self._compiled = (CompiledMessagePassing(model.backbone.message_passing, compile_backend)
                          if settings.compile else None)
        self._warm_up: WarmUp | None = None
        self._switched = False
        self._unverified = False  # the next compiled call is the loaded code's first
        self._first_answer = threading.Lock()  # held while the first answer is computed
        self._answered = False
        on_cuda = device.type == "cuda"
        self._rotation = (GraphedRotation(model.backbone.rotation)
                          if settings.wigner_cuda and on_cuda else None)
        self._tf32 = settings.tf32 and on_cuda
        self._isolated_atoms: IsolatedAtomEnergies | None = None
        self._checked_species: set[tuple] = set()
        self._numbers_on_device: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        """The task names this model predicts for."""
        return self.model.datasets

    @property
    def dtype(self) -> torch.dtype:
        return self.settings.base_precision_dtype

    def active_settings(self) -> dict[str, bool]:
        """Each boolean setting and whether it takes effect on this device
        (``tf32`` and ``wigner_cuda`` act on CUDA only)."""
        active = {name: value for name, value in self.settings.as_dict().items()
                  if isinstance(value, bool)}
        active["tf32"] = self._tf32
        active["wigner_cuda"] = self._rotation is not None
        return active

    def batch(self, systems: Sequence[System]) -> AtomsBatch:
        """The systems as one batch of tensors on the model's device (validated).

        What never changes within a run (a system's numbers, task, charge and
        spin) is checked once per distinct system, and the atomic numbers are
        uploaded once per distinct batch of them; positions and cells are
        checked on every call."""
        if not systems:
            raise InvalidSystemError("predict() needs at least one system")
        species = []
        for index, system in enumerate(systems):
            key = _species_key(system)
            if key not in self._checked_species:
                _check_species(f"system {index}", system, self)
                if len(self._checked_species) >= _SPECIES_CACHE:
                    self._checked_species.clear()
                self._checked_species.add(key)
            count = key[1][0]
            shape = np.shape(system.structure.positions)
            if shape != (count, 3):
                raise InvalidSystemError(f"system {index}: positions have shape {shape}, "
                                         f"expected ({count}, 3) for {count} atoms")
            species.append(key[:3])
        positions = np.concatenate([system.structure.positions for system in systems])
        cells = np.stack([system.structure.cell for system in systems])
        if not (np.isfinite(positions).all() and np.isfinite(cells).all()):
            index = next(i for i, system in enumerate(systems)
                         if not (np.isfinite(system.structure.positions).all()
                                 and np.isfinite(system.structure.cell).all()))
            raise InvalidSystemError(f"system {index}: positions and cell must be finite")
        numbers, batch = self._numbers_tensors(systems, tuple(species))
        def tensor(values, dtype):
            return torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device)
        return AtomsBatch(
            numbers=numbers,
            positions=tensor(positions, self.dtype),
            cell=tensor(cells, self.dtype),
            pbc=tensor(np.stack([system.structure.pbc for system in systems]), torch.bool),
            batch=batch,
            charge=tensor([int(system.charge) for system in systems], torch.long),
            spin=tensor([int(system.spin) for system in systems], torch.long),
            datasets=tuple(system.task for system in systems),
        )

    def _numbers_tensors(self, systems: Sequence[System],
                         species: tuple[tuple, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) atomic numbers and (N,) system index on the device, uploaded again
        only when the batch's numbers (``species``: each system's dtype, shape and
        bytes) change."""
        cached = self._numbers_on_device
        if cached is not None and cached[0] == species:
            return cached[1], cached[2]
        sizes = torch.as_tensor([len(system.numbers) for system in systems], device=self.device)
        numbers = torch.as_tensor(np.concatenate([system.numbers for system in systems]),
                                  dtype=torch.long, device=self.device)
        batch = torch.repeat_interleave(torch.arange(len(systems), device=self.device), sizes)
        self._numbers_on_device = (species, numbers, batch)
        return numbers, batch

    def graph(self, atoms: AtomsBatch) -> RadiusGraph:
        """The radius graph of a batch, from this unit's generator and settings."""
        return self.graph_generator(atoms.positions, atoms.cell, atoms.pbc, atoms.batch,
                                    cutoff=self.model.cutoff,
                                    max_neighbors=self.model.max_neighbors,
                                    version=self.settings.internal_graph_gen_version)

    def predict(self, systems: Sequence[System], *,
                graph: RadiusGraph | None = None) -> list[Prediction]:
        """Energy (eV, float64), forces (eV/Å) and stress (eV/Å³, when the cell has a
        volume) of each system, in order.

        Any mix of systems may share a batch; with ``merge_mole`` a batch of one
        system (e.g. path-integral beads) runs on the merged experts. ``graph``:
        the caller's graph of the whole batch (``external_graph_gen`` only).
        """
        if self._answered:
            return self._predict(systems, graph)
        with self._first_answer:  # a background warm-up waits (see warm_up)
            predictions = self._predict(systems, graph)
            self._answered = True
            return predictions

    def _predict(self, systems: Sequence[System],
                 graph: RadiusGraph | None) -> list[Prediction]:
        if not self.model.supports_single_atoms and any(
                is_isolated_atom(system.numbers, system.structure.pbc) for system in systems):
            return self._predict_with_isolated_atoms(systems, graph)
        started = time.perf_counter()
        atoms = self.batch(systems)
        if graph is None:
            graph = self.graph(atoms)
        elif not self.settings.external_graph_gen:
            raise InferenceSettingsError(
                "predict() got a graph but InferenceSettings.external_graph_gen=False; "
                "set external_graph_gen=True to supply graphs")
        else:
            _check_graph(graph, atoms)
        merged = self._merge_for(systems, atoms)
        groups = self._system_groups(atoms, graph)
        if len(groups) == 1:
            parts = [self._evaluate(atoms, graph, merged)]
        else:
            self._note_split(atoms, graph, groups)
            parts = [self._evaluate(atoms.systems(group), graph.systems(atoms.batch, group),
                                    merged) for group in groups]
        energy, forces, stress = (np.concatenate(values) for values in zip(*parts))
        self._count(len(systems), time.perf_counter() - started)
        starts = np.cumsum([0] + [len(system.numbers) for system in systems])
        predictions = []
        for index in range(len(systems)):
            system_stress = stress[index]
            predictions.append(Prediction(
                energy=float(energy[index]),
                forces=forces[starts[index]:starts[index + 1]],
                stress=None if np.isnan(system_stress).all() else system_stress))
        return predictions

    def _evaluate(self, atoms: AtomsBatch, graph: RadiusGraph,
                  merged: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energies (B,), forces (N, 3) and stresses (B, 3, 3) of one batch that is
        evaluated at once (chunked when it does not fit the memory), as float64."""
        guarded = self._plan_checkpointing(graph)
        message_passing = None if guarded else self._message_passing()
        try:
            outputs = self._forward(atoms, graph, merged, message_passing)
        except Exception as error:
            if message_passing is None or not self._unverified:
                raise
            # code loaded from the cache that never ran here: recover, never lose the step
            log.error("the compiled model loaded from the cache failed on its first call "
                      "(%s: %s): answering uncompiled from now on", type(error).__name__, error)
            self._compiled = message_passing = None
            outputs = self._forward(atoms, graph, merged, None)
        self._unverified = self._unverified and message_passing is None
        return (outputs.energy.cpu().double().numpy(),
                outputs.forces.detach().cpu().double().numpy(),
                outputs.stress.detach().cpu().double().numpy())

    @property
    def _memory_limit(self) -> int:
        """Bytes a step's edge activations may take: the memory budget, or without
        activation checkpointing all the memory free when the unit was built."""
        return self.memory_budget if self._memory_guard is None else self._memory_guard

    def _system_groups(self, atoms: AtomsBatch, graph: RadiusGraph) -> list[range]:
        """The batch's systems in groups whose activations fit the memory budget
        (without checkpointing: the free memory), evaluated one after another;
        one group when the whole batch fits or holds a single system."""
        max_edges = self._memory_limit // self._bytes_per_edge
        if atoms.num_systems < 2 or graph.edge_index.shape[1] <= max_edges:
            return [range(atoms.num_systems)]
        edges = torch.bincount(atoms.batch[graph.edge_index[1]], minlength=atoms.num_systems)
        return activation_memory.system_groups(edges.tolist(), max(1, max_edges))

    def _note_split(self, atoms: AtomsBatch, graph: RadiusGraph, groups: list[range]) -> None:
        self.stats.split_calls += 1
        shape = (atoms.num_systems, len(groups))
        if shape == self._last_split:
            return
        self._last_split = shape
        edges = int(graph.edge_index.shape[1])
        log.info("a batch of %d systems (%d edges) needs about %.1f GB of activations, more "
                 "than the %.1f GB %s: evaluated as %d groups of whole systems (up to %d "
                 "systems each), one after another, nothing recomputed",
                 atoms.num_systems, edges, edges * self._bytes_per_edge / 1e9,
                 self._memory_limit / 1e9,
                 "free when the model was loaded" if self._memory_guard is not None
                 else "memory budget", len(groups), max(len(group) for group in groups))

    def _forward(self, atoms: AtomsBatch, graph: RadiusGraph, merged: bool,
                 message_passing: CompiledMessagePassing | None):
        run = RunOptions(merged=merged, message_passing=message_passing,
                         rotation=self._rotation)
        with tf32_matmuls(self._tf32):
            return self.model(atoms, graph, run=run)

    def _predict_with_isolated_atoms(self, systems: Sequence[System],
                                     graph: RadiusGraph | None) -> list[Prediction]:
        """Lone atoms without periodic images from fairchem's isolated-atom energies
        (see :mod:`umadrive.model.single_atoms`), the other systems from the model."""
        self.batch(systems)  # validates every system
        if graph is not None:
            raise InvalidSystemError("a single isolated atom cannot come with an external "
                                     "graph for a UMA 1.0/1.1 model; send it alone, without one")
        if self._isolated_atoms is None:
            self._isolated_atoms = IsolatedAtomEnergies.from_cache()
        lone = [is_isolated_atom(system.numbers, system.structure.pbc) for system in systems]
        rest = iter(self._predict([s for s, alone in zip(systems, lone) if not alone], None)
                    if not all(lone) else [])
        predictions = []
        for system, alone in zip(systems, lone):
            if not alone:
                predictions.append(next(rest))
                continue
            energy = self._isolated_atoms.energy(system.task, int(system.numbers[0]),
                                                 int(system.charge))
            volume = abs(np.linalg.det(np.asarray(system.structure.cell, dtype=float)))
            predictions.append(Prediction(energy=energy, forces=np.zeros((1, 3)),
                                          stress=np.zeros((3, 3)) if volume > 0 else None))
        return predictions

    def warm_up(self, systems: Sequence[System], *, background: bool = False,
                cache: KernelCache | None = None, progress: Progress | None = None,
                fill_cache: Callable[[], None] | None = None) -> WarmUp:
        """Compiles the message passing (``settings.compile``) on a batch of ``systems``.

        One batch suffices: the compiled code then serves any number of systems
        of these compositions, atoms and edges without a recompile (see
        :mod:`umadrive.model.compiling`). background: compile in a daemon thread;
        until it ends, :meth:`predict` answers uncompiled (the same values to
        rounding) and then switches, with one log line. cache: the message passing
        precompiled for this model and settings is loaded from it, without tracing,
        when there, and precompiled and stored in it (atomically) when not.
        progress: ``progress(text, final, warm_up)`` every second while compiling
        and at the end (:data:`~umadrive.model.compiling.Progress`). A background
        warm-up makes way for the unit's first answer: what it has not begun when
        that answer starts waits until the answer is done (the engine's first
        step is not slowed by more than one step of the warm-up). fill_cache:
        with a cache, fills a missing entry from another process before this one
        compiles (see :class:`~umadrive.model.compiling.WarmUp`).
        Raises InferenceSettingsError without ``compile``, RuntimeError when a
        warm-up was already started.
        """
        if self._compiled is None:
            raise InferenceSettingsError("warm_up() compiles, but InferenceSettings.compile=False")
        if self._warm_up is not None:
            raise RuntimeError("this predict unit's warm-up was already started")
        atoms = self.batch(systems)
        graph = self.graph(atoms)
        merged = self._merge_for(systems, atoms)
        group = self._system_groups(atoms, graph)[0]
        if len(group) < atoms.num_systems:  # compiled for the batches the calls will run
            atoms, graph = atoms.systems(group), graph.systems(atoms.batch, group)
        self._plan_checkpointing(graph)

        def predict_once(message_passing) -> None:
            run = RunOptions(merged=merged, message_passing=message_passing,
                             rotation=self._rotation)
            with tf32_matmuls(self._tf32):
                self.model(atoms, graph, run=run)

        backend = self._compiled.backend
        if cache is not None and not isinstance(backend, str):
            raise InferenceSettingsError("compiled kernels are cached only for a named "
                                         f"compile backend, got {backend!r}")

        def key() -> KernelKey:
            return KernelKey.of(self.model, self.settings.as_dict(), self.device, backend)

        self._warm_up = WarmUp(predict_once, compiled=self._compiled,
                               what=f"the model for {self.device.type} "
                               f"({backend if isinstance(backend, str) else 'custom backend'})",
                               cache=cache, key=key if cache is not None else None,
                               progress=progress, fill_cache=fill_cache,
                               yield_to=self._wait_for_first_answer if background else None)
        self._warm_up.start(background=background)
        if not background and self._warm_up.error is not None:
            raise self._warm_up.error
        return self._warm_up

    def _wait_for_first_answer(self) -> None:
        """Blocks while the unit computes its first answer."""
        if not self._answered:
            with self._first_answer:
                pass

    def checkpoint_chunk(self, edges: int) -> int | None:
        """Edges per recomputed chunk for a step of ``edges`` edges, None for no
        recomputation (always None without ``activation_checkpointing``)."""
        if self.memory_budget is None:
            return None
        return activation_memory.checkpoint_chunk(edges, self._bytes_per_edge,
                                                  self.memory_budget)

    def _plan_checkpointing(self, graph: RadiusGraph) -> bool:
        """Sets the model's checkpoint chunk for this step; True when the step is
        chunked although checkpointing is off (its activations would not fit in
        memory at all: see :mod:`umadrive.model.activation_memory`)."""
        edges = int(graph.edge_index.shape[1])
        if self._memory_guard is None:
            chunk, guarded = self.checkpoint_chunk(edges), False
        else:
            chunk = activation_memory.checkpoint_chunk(edges, self._bytes_per_edge,
                                                       self._memory_guard)
            guarded = chunk is not None
            if guarded and chunk != self._guard_warned:
                self._guard_warned = chunk
                log.warning(
                    "a step of %d edges needs about %.1f GB of activations, more than the "
                    "%.1f GB free when the model was loaded: computed uncompiled in chunks of "
                    "%d edges, recomputed in the backward pass (slower); send fewer "
                    "structures per call, or use activation_checkpointing (default mode)",
                    edges, edges * self._bytes_per_edge / 1e9, self._memory_guard / 1e9, chunk)
        if chunk != self._chunk:
            self.model.backbone.set_checkpoint_chunk(chunk)
            self._chunk = chunk
        if chunk is not None:
            self.stats.checkpointed_calls += 1
        return guarded

    def _message_passing(self) -> CompiledMessagePassing | None:
        """The compiled message passing, or None for the eager one: without compile,
        while a background warm-up runs, and after a warm-up failed."""
        compiled, warm_up = self._compiled, self._warm_up
        if compiled is None or warm_up is None or self._switched:
            return compiled  # without a warm-up, this call compiles
        if not warm_up.done:
            self.stats.uncompiled_calls += 1
            return None
        if warm_up.error is not None:
            log.error("%s; answering uncompiled from now on", warm_up.summary())
            self._compiled = None
            return None
        self._switched = True
        self._unverified = not warm_up.ran_compiled
        log.info("%s; switching to compiled answers after %d uncompiled", warm_up.summary(),
                 self.stats.uncompiled_calls)
        return compiled

    def _merge_for(self, systems: Sequence[System], atoms: AtomsBatch) -> bool:
        """Whether this batch runs on merged experts (merging them for it if needed)."""
        if self._merger is None:
            return False
        key = common_key([self._merger.key_of(system.numbers, system.charge, system.spin,
                                              system.task) for system in systems])
        if key is None:
            if self.stats.routed_calls == 0:
                log.info("a batch mixes systems of different composition, charge, spin or "
                         "task: evaluated with routed experts (merged weights kept)")
            self.stats.routed_calls += 1
            return False
        first = systems[0]
        size = len(first.numbers)
        self._merger.ensure(key, atoms.numbers[:size], int(first.charge), int(first.spin),
                            first.task)
        self.stats.merges = self._merger.merges
        return True

    def _count(self, systems: int, seconds: float) -> None:
        stats = self.stats
        if stats.warmup_s is None:
            stats.warmup_s = seconds
            if self._compiled is not None and self._warm_up is None:
                log.info("first call with compile (the warm-up): %.1f s", seconds)
        stats.calls += 1
        stats.systems += systems
        if self._rotation is not None:
            stats.wigner_captures = self._rotation.captures


def _private_copy(model: UMA) -> UMA:
    """A deep copy of ``model`` whose parameters share the original's storage but
    are new tensors that require no gradient."""
    shared = {id(parameter): torch.nn.Parameter(parameter.detach(), requires_grad=False)
              for parameter in model.parameters()}
    return copy.deepcopy(model, memo=shared)


def _check_graph(graph: RadiusGraph, atoms: AtomsBatch) -> None:
    """Raise InvalidSystemError unless ``graph`` fits the batch ``atoms``."""
    edge_index, offsets = graph.edge_index, graph.cell_offsets
    atoms_count = atoms.numbers.shape[0]
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise InvalidSystemError(f"graph.edge_index must be a (2, E) long tensor, got "
                                 f"{tuple(edge_index.shape)} {edge_index.dtype}")
    edges = edge_index.shape[1]
    if tuple(offsets.shape) != (edges, 3):
        raise InvalidSystemError(f"graph.cell_offsets has shape {tuple(offsets.shape)}, "
                                 f"expected ({edges}, 3) for {edges} edges")
    if edges and (int(edge_index.min()) < 0 or int(edge_index.max()) >= atoms_count):
        raise InvalidSystemError(f"graph.edge_index holds atom indices outside [0, "
                                 f"{atoms_count - 1}] for a batch of {atoms_count} atoms")
    if edges and bool((atoms.batch[edge_index[0]] != atoms.batch[edge_index[1]]).any()):
        raise InvalidSystemError("graph.edge_index joins atoms of different systems")
    if edge_index.device != atoms.numbers.device:
        raise InvalidSystemError(f"the graph is on {edge_index.device}, the model on "
                                 f"{atoms.numbers.device}; move it with .to()")


def get_predict_unit(model: str | os.PathLike, device: str | torch.device = "cpu",
                     inference_settings: str | InferenceSettings = "default", *,
                     graph_generator: GraphGenerator | None = None,
                     compile_backend: str | Callable = "inductor",
                     memory_budget: int | None = None) -> PredictUnit:
    """Load a UMA checkpoint once and return a :class:`PredictUnit` for it.

    model: path of a UMA checkpoint (fairchem's ``.pt`` or umadrive's own format)
        or a model name (``uma-s-1p2p1``, ...; see :mod:`umadrive.model.names`).
    device: torch device, e.g. "cpu" or "cuda" (DeviceUnavailableError when torch
        cannot use it).
    inference_settings: "default", "turbo" or an :class:`InferenceSettings`.
    graph_generator: with ``external_graph_gen``, the function that builds graphs
        (default :func:`~umadrive.model.graph.vesin_graph`).
    compile_backend: ``torch.compile``'s backend with ``compile`` (see :class:`PredictUnit`).
    memory_budget: bytes for a step's edge activations with activation
        checkpointing (see :class:`PredictUnit`).

    A checkpoint may declare the elements each task was trained on (see
    :mod:`umadrive.model.domain`); systems with other elements are refused.
    """
    settings = resolve_settings(inference_settings)
    device = check_device(device)
    if device.type == "cpu":
        edge_products.prepare()  # the C kernels, built while the checkpoint loads
    checkpoint = load_checkpoint(resolve_model(model))
    uma = UMA.from_checkpoint(checkpoint, dtype=settings.base_precision_dtype, device=device)
    return PredictUnit(uma, device=device, settings=settings, graph_generator=graph_generator,
                       compile_backend=compile_backend,
                       element_domain=ElementDomain.from_tasks(checkpoint.tasks_config),
                       memory_budget=memory_budget)
