"""Pretrained model names → checkpoint files.

``resolve_model("uma-s-1p1")`` looks for ``uma-s-1p1.pt``, in order:

1. ``$UMADRIVE_CACHE`` (default ``~/.cache/umadrive``), the file directly inside;
2. fairchem's cache (``$FAIRCHEM_CACHE_DIR``, default ``~/.cache/fairchem``) and
   Hugging Face's hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), both in the hub layout
   ``models--facebook--UMA/snapshots/<revision>/checkpoints/<file>``;
3. a download from the gated ``facebook/UMA`` repository with ``huggingface_hub``,
   when it is installed, a token is configured and ``HF_HUB_OFFLINE`` is not set.

A path to an existing file is returned as it is; a name may end in ``.pt``
(``uma-s-1p1.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path

HF_REPO = "facebook/UMA"
HF_SUBFOLDER = "checkpoints"

KNOWN_MODELS = {
    "uma-s-1": "uma-s-1.pt", "uma-s-1p1": "uma-s-1p1.pt", "uma-m-1p1": "uma-m-1p1.pt",
    "uma-s-1p2": "uma-s-1p2.pt", "uma-s-1p2p1": "uma-s-1p2p1.pt",
    "uma-s-1p2p1-ft-d4rev": "uma-s-1p2p1-ft-d4rev.pt",
    "uma-s-1p2p1-ft-r2scan": "uma-s-1p2p1-ft-r2scan.pt",
}
"""Names of the official checkpoints umadrive runs, and their file names."""

BUNDLED_MODELS: dict[str, Path] = {
    "demo": Path(__file__).resolve().parent.parent / "data" / "demo" / "uma-demo.pt",
}
"""Names of checkpoints shipped inside the umadrive package (the demo model)."""


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that resolves to no file; the message says where to put it."""


def resolve_model(model: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint file for ``model``: a path to a file, or a known model name
    (with or without ``.pt``). ``cache_dir``: a folder searched first (the file
    directly inside, or in the hub layout) and where a download goes."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    name = os.fspath(model)
    if name.endswith(".pt") and name[:-3] in {*KNOWN_MODELS, *BUNDLED_MODELS}:
        name = name[:-3]
    if name in BUNDLED_MODELS:
        return BUNDLED_MODELS[name]
    if name not in KNOWN_MODELS:
        known = ", ".join(sorted({*KNOWN_MODELS, *BUNDLED_MODELS}))
        if name.endswith(".pt") or os.sep in name or "/" in name:
            raise ModelNotFoundError(
                f"no such file: {name!r} (resolved to {path.resolve()}); give the path of an "
                f"existing checkpoint file, or one of the model names: {known}")
        raise ModelNotFoundError(
            f"{name!r} is neither a checkpoint file nor a known model name; "
            f"give the path to a .pt file or one of: {known}"
        )
    filename = KNOWN_MODELS[name]
    first = [] if cache_dir is None else [Path(cache_dir).expanduser()]
    searched = [folder / filename for folder in (*first, umadrive_cache())]
    for hub_cache in (*first, fairchem_cache(), huggingface_cache()):
        searched.extend(_hub_snapshot_files(hub_cache, filename))
    for candidate in searched:
        if candidate.is_file():
            return candidate
    download_problem = _download_problem()
    if download_problem is None:
        try:
            return _download(filename, cache_dir)
        except Exception as error:  # network, licence or authentication problems
            download_problem = f"downloading it failed: {error}"
    looked_in = "\n  ".join(str(p) for p in searched) or "(nothing)"
    raise ModelNotFoundError(
        f"model {name!r} not found. Put {filename} (from https://huggingface.co/{HF_REPO}, "
        f"file {HF_SUBFOLDER}/{filename}; the repository is gated: accept its licence "
        f"first) into {umadrive_cache()}/ (or set UMADRIVE_CACHE to the folder holding "
        f"it), or pass the path to the file. Not downloaded: {download_problem}.\n"
        f"Looked for:\n  {looked_in}"
    )


ISOLATED_ATOM_REFERENCES = "iso_atom_elem_refs.yaml"
"""fairchem's isolated-atom energies, ``references/`` in the facebook/UMA repository."""


def find_reference_file(filename: str = ISOLATED_ATOM_REFERENCES) -> tuple[Path | None, list[Path]]:
    """A reference file of the model repository from the caches (no download): the
    umadrive cache holding it directly, then the ``references/`` folder of the
    facebook/UMA snapshots in fairchem's and Hugging Face's caches. Returns the file
    (None if absent) and the places looked at."""
    searched = [umadrive_cache() / filename]
    for hub_cache in (fairchem_cache(), huggingface_cache()):
        searched.extend(path.parent.parent / "references" / filename
                        for path in _hub_snapshot_files(hub_cache, filename))
    return next((path for path in searched if path.is_file()), None), searched


def umadrive_cache() -> Path:
    return Path(os.environ.get("UMADRIVE_CACHE", "~/.cache/umadrive")).expanduser()


def fairchem_cache() -> Path:
    return Path(os.environ.get("FAIRCHEM_CACHE_DIR", "~/.cache/fairchem")).expanduser()


def huggingface_cache() -> Path:
    """Hugging Face's hub cache, by huggingface_hub's own precedence of variables."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _hub_snapshot_files(hub_cache: Path, filename: str) -> list[Path]:
    """Where ``filename`` would be in each snapshot of facebook/UMA in a hub cache:
    the snapshot ``refs/main`` names first, then the others, newest first."""
    repo = hub_cache / ("models--" + HF_REPO.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return []
    ordered = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    main = repo / "refs" / "main"
    if main.is_file():
        head = snapshots / main.read_text().strip()
        ordered = [head] + [p for p in ordered if p != head]
    return [snapshot / HF_SUBFOLDER / filename for snapshot in ordered]


def _download_problem() -> str | None:
    """Why a download cannot be tried now, or None when it can."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    try:
        import huggingface_hub
    except ImportError:
        return "huggingface_hub is not installed (pip install huggingface_hub: the [hub] extra)"
    if not huggingface_hub.get_token():
        return "no Hugging Face token is configured (huggingface-cli login, or HF_TOKEN)"
    return None


def _download(filename: str, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=HF_REPO, filename=filename, subfolder=HF_SUBFOLDER,
                                cache_dir=cache_dir))
