"""``umadrive lammps`` leaves no MPICH shared memory behind (issue 11: every
failed or terminated run left a 1 MB ``/dev/shm/mpich_shm_<pid in hex>_0``):
its segment's name is removed once LAMMPS has started, so neither a failure
(``os._exit`` from the callback) nor a signal can leave it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from ase.build import bulk

from tests.lammps.scripts import one_copper_cell
from tests.lammps.conftest import PEER_TIMEOUT_S

SCRIPT = one_copper_cell(2)


def segment(pid: int) -> Path:
    """The segment MPICH creates for a single process (named after its pid)."""
    return Path(f"/dev/shm/mpich_shm_{pid:x}_0")


def wait_for_text(peers, process, text: str) -> None:
    deadline = time.monotonic() + PEER_TIMEOUT_S
    while text not in peers.output(process):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"never saw {text!r}:\n{peers.logs()}")
        time.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_terminated_bridge_leaves_no_shared_memory(peers, socket_name, sig):
    (peers.folder / "in.copper").write_text(SCRIPT)
    bridge = peers.umadrive("lammps", "lammps", "in.copper", "--unix", socket_name,
                            "--log", "none")
    wait_for_text(peers, bridge, "waiting for umadrive serve")  # LAMMPS (and MPI) started
    bridge.send_signal(sig)
    assert bridge.wait(PEER_TIMEOUT_S) == -sig, peers.logs()
    assert not segment(bridge.pid).exists()


@pytest.mark.timeout(120)
def test_a_bridge_failing_inside_the_callback_leaves_no_shared_memory(peers):
    """umadrive serve's template has 1 atom, LAMMPS 4: the server refuses the
    first request and the bridge ends from inside the LAMMPS callback (os._exit,
    no MPI_Finalize)."""
    (peers.folder / "in.copper").write_text(SCRIPT)
    bulk("Cu", "fcc", a=3.61).write(peers.folder / "one.extxyz")
    name = peers.socket("shm")
    serve = peers.serve_emt(name, "one.extxyz")
    bridge = peers.umadrive("lammps", "lammps", "in.copper", "--unix", name, "--log", "none")
    assert peers.wait(bridge) == 1, peers.logs()
    assert "umadrive lammps: error at step 0" in peers.output(bridge), peers.logs()
    assert peers.wait(serve) == 1, peers.logs()
    assert not segment(bridge.pid).exists()
