"""The long-running process: connections, batching, lifecycle, LAMMPS bridge."""
