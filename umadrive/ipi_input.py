"""i-PI input files for runs served by umadrive (the demo, the tests, the
benchmarks): one function that writes the XML, so every run is set up alike."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from umadrive.protocol.addresses import DEFAULT_PREFIX


@dataclass(frozen=True)
class IpiRun:
    """What one i-PI run does.

    structure: file i-PI reads with ASE (``mode='ase'``), Å.
    unix / host+port: where i-PI listens (``unix`` is a name under ``prefix``).
    transport: ``socket`` (the plain protocol), ``shm`` (``<ffsocket mode='shm'>``,
        needs ``unix``) or ``mpi`` (``<ffmpi>``, no address: i-PI runs under
        ``mpiexec`` with the drivers).
    ensemble: ``nve``, ``nvt`` (PILE-G thermostat) or ``npt`` (isotropic barostat).
    timestep_fs, temperature_k, pressure_mpa (npt only), nbeads: the physics.
    batch_size > 1: i-PI's batched protocol. consolidate: i-PI 3.3's
    ``consolidate_messages``.
    properties: the columns of ``<output_prefix>.out``, in i-PI's syntax
        (``potential`` is in Hartree, ``potential{electronvolt}`` in eV).
    trajectories: per-bead quantities written every step to
        ``<output_prefix>.<quantity>_<bead>.extxyz`` (ASE's extended XYZ, in ASE
        units: i-PI converts with ase.units, as umadrive does).
    extras: also write each bead's extras (the JSON the driver sent) every step to
        ``<output_prefix>.extras_<bead>``.
    verbosity: i-PI's; ``high`` prints the time of every step.
    """

    structure: str
    steps: int
    unix: str | None = None
    prefix: str = DEFAULT_PREFIX
    host: str | None = None
    port: int | None = None
    transport: str = "socket"
    ensemble: str = "nvt"
    nbeads: int = 1
    timestep_fs: float = 1.0
    temperature_k: float = 300.0
    pressure_mpa: float = 0.1
    batch_size: int = 1
    consolidate: bool = True
    properties: tuple[str, ...] = ("step", "time{picosecond}", "conserved{electronvolt}",
                                   "temperature{kelvin}", "potential{electronvolt}")
    trajectories: tuple[str, ...] = ()
    extras: bool = False
    seed: int = 3348
    output_prefix: str = "sim"
    verbosity: str = "low"

    def __post_init__(self) -> None:
        if self.transport not in ("socket", "shm", "mpi"):
            raise ValueError(f"transport={self.transport!r}: expected 'socket', 'shm' or 'mpi'")
        if self.transport == "mpi":
            if self.unix is not None or self.port is not None:
                raise ValueError("transport='mpi' takes no unix=NAME or port=P")
        elif (self.unix is None) == (self.port is None):
            raise ValueError("give exactly one of unix=NAME or port=P")
        elif self.transport == "shm" and self.unix is None:
            raise ValueError("transport='shm' needs unix=NAME (its control socket)")
        if self.ensemble not in ("nve", "nvt", "npt"):
            raise ValueError(f"ensemble={self.ensemble!r}: expected 'nve', 'nvt' or 'npt'")


def ipi_input_xml(run: IpiRun) -> str:
    """The i-PI input XML for ``run``; every number is printed in full precision
    (``floatformat='%25.16e'``)."""
    batch = f"<batch_size>{run.batch_size}</batch_size>" if run.batch_size > 1 else ""
    if run.transport == "mpi":
        socket = f"<ffmpi name='umadrive' pbc='false'><latency>1e-4</latency>{batch}</ffmpi>"
    else:
        if run.unix is not None:
            mode = "shm" if run.transport == "shm" else "unix"
            socket = (f"<ffsocket mode='{mode}' name='umadrive' pbc='false'>"
                      f"<address>{escape(run.unix)}</address>")
        else:
            socket = (f"<ffsocket mode='inet' name='umadrive' pbc='false'>"
                      f"<address>{escape(run.host or 'localhost')}</address><port>{run.port}</port>")
        socket += (f"<latency>1e-4</latency><timeout>600</timeout>"
                   f"<consolidate_messages>{str(run.consolidate).lower()}</consolidate_messages>"
                   f"{batch}</ffsocket>")

    trajectories = "".join(
        f"<trajectory filename='{q}' stride='1' format='ase'>{q}</trajectory>"
        for q in run.trajectories
    )
    if run.extras:
        trajectories += "<trajectory filename='extras' stride='1'>extras</trajectory>"
    ensemble = f"<temperature units='kelvin'>{run.temperature_k}</temperature>"
    thermostat = ("<thermostat mode='pile_g'><tau units='femtosecond'>100</tau></thermostat>")
    timestep = f"<timestep units='femtosecond'>{run.timestep_fs}</timestep>"
    if run.ensemble == "nve":
        dynamics = f"<dynamics mode='nve'>{timestep}</dynamics>"
    elif run.ensemble == "nvt":
        dynamics = f"<dynamics mode='nvt'>{thermostat}{timestep}</dynamics>"
    else:
        ensemble += f"<pressure units='megapascal'>{run.pressure_mpa}</pressure>"
        dynamics = (
            "<dynamics mode='npt'><barostat mode='isotropic'><tau units='femtosecond'>200</tau>"
            "<thermostat mode='langevin'><tau units='femtosecond'>100</tau></thermostat>"
            f"</barostat>{thermostat}{timestep}</dynamics>"
        )
    return f"""<simulation verbosity='{escape(run.verbosity)}' safe_stride='1000' floatformat='%25.16e' sockets_prefix='{escape(run.prefix)}'>
  <output prefix='{run.output_prefix}'>
    <properties stride='1' filename='out'>[{', '.join(run.properties)}]</properties>
    {trajectories}
  </output>
  <total_steps>{run.steps}</total_steps>
  <prng><seed>{run.seed}</seed></prng>
  {socket}
  <system>
    <initialize nbeads='{run.nbeads}'>
      <file mode='ase' units='angstrom'>{escape(run.structure)}</file>
      <velocities mode='thermal' units='kelvin'>{run.temperature_k}</velocities>
    </initialize>
    <forces><force forcefield='umadrive'/></forces>
    <ensemble>{ensemble}</ensemble>
    <motion mode='dynamics'>{dynamics}</motion>
  </system>
</simulation>
"""
