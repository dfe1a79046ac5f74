"""The LAMMPS bridge: LAMMPS integrates, ``fix external`` asks a running
``umadrive serve`` for the forces through the i-PI protocol (``umadrive lammps``,
:mod:`umadrive.commands.lammps`). Never imports the driver or the model."""
