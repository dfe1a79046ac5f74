"""Package-level promises: the protocol, the driver (torch only for a UMA backend)
and the command line import without torch, and the command line answers."""

import os
import subprocess
import sys


def test_protocol_driver_and_cli_import_without_torch():
    code = (
        "import sys, umadrive.protocol, umadrive.structure, umadrive.driver, umadrive.cli;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_info_prints_versions_and_model_search_paths(tmp_path):
    env = {**os.environ, "UMADRIVE_CACHE": str(tmp_path / "models")}
    out = subprocess.run(
        [sys.executable, "-m", "umadrive", "info"], check=True, capture_output=True, text=True,
        env=env,
    ).stdout
    assert f"{tmp_path / 'models'}/  (UMADRIVE_CACHE)" in out
    assert "umadrive" in out and "numpy" in out
    assert "names are looked for in, in order" in out and "UMADRIVE_CACHE" in out
    from umadrive.model import edge_products

    kernels = next(line for line in out.splitlines() if line.startswith("kernels"))
    # built into the cache it was given where this process could build them too
    expected = (str(tmp_path / "models" / "kernels") if edge_products.available()
                else "torch.bmm")
    assert expected in kernels, kernels


def test_cli_version_and_pes_path():
    import umadrive

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "umadrive", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert run("--version") == f"umadrive {umadrive.__version__}"
    pes = run("info", "--pes-path")
    assert pes.endswith(os.path.join("umadrive", "ipi_pes.py")) and os.path.isfile(pes)
    assert f"i-PI PES {pes}" in run("info")
