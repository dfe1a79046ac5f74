"""Minimal reproduction: i-PI 3.3.1 + MPICH (Hydra) ends an ``<ffmpi>`` job with
exit status 9 at times, after a complete and correct run.

i-PI's ``Softexit.kill`` (``ipi/utils/softexit.py``, with ``hard_exit`` set by
the ``i-pi`` script) calls ``MPI.Finalize()`` and then ``os._exit(0)``. When rank 0
leaves that fast, Hydra's proxy at times sees it exit before it has registered
its finalize, takes it for a crash and SIGKILLs the driver ranks that are still
finalizing: ``BAD TERMINATION ... Killed (signal 9)``. This script does what
i-PI does at the end of a run, with no i-PI and no umadrive involved::

    for i in $(seq 60); do mpiexec -n 3 python ipi_ffmpi_hard_exit_repro.py os_exit || echo bad; done
    # measured here (MPICH 5.0.2 wheel, mpi4py 4.1.2): 11 of 60 jobs end with status 9
    for i in $(seq 60); do mpiexec -n 3 python ipi_ffmpi_hard_exit_repro.py sys_exit || echo bad; done
    # 0 of 60
    for i in $(seq 60); do mpiexec -disable-auto-cleanup -n 3 python ipi_ffmpi_hard_exit_repro.py os_exit || echo bad; done
    # 0 of 60: the workaround umadrive's tests and README use

Seen with i-PI's own ``i-pi-py_driver --mpi -m dummy`` too (3 of 60 runs).
"""

import os
import sys
import time

from mpi4py import MPI

world = MPI.COMM_WORLD
if world.Get_rank() == 0:  # i-PI: send EXIT to every driver, finalize, hard exit
    for rank in range(1, world.Get_size()):
        world.send("exit", dest=rank, tag=6)
    MPI.Finalize()
    if sys.argv[1] == "os_exit":
        os._exit(0)
    sys.exit(0)
else:  # a driver: take EXIT, then leave normally (mpi4py finalizes at exit)
    world.recv(source=0, tag=6)
    time.sleep(0.3)  # the interpreter's teardown, stretched to make the race likely
