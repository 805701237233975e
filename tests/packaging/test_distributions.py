"""The sdist and the wheel, built as a release would be, and the wheel installed as a user
would install it, away from this tree.

The sdist carries every tracked file (the package, the tests and what they read) and none
of what running a checkout leaves behind (caches, test outputs, databases, benchmark
results); the wheel is built from the extracted sdist, so the sdist is shown to build. The
wheel holds the package's files and nothing else: every module, the migrations, the
console's templates and static files, ``py.typed``; its entry point is
``tasklease.cli:main``; its version is the one the broker reports and the CHANGELOG's
latest release.

The wheel then goes, without its dependencies and offline, into a fresh virtual
environment that sees this environment's packages but not its ``tasklease`` (nor this
tree: no PYTHONPATH, another working directory). There ``tasklease init`` makes a broker
on SQLite, ``tasklease serve`` runs it (the migrations are in the wheel), the console's
sign-in page and its assets load, the OpenAPI document is served, and ``tasklease
doctor`` and ``tasklease sbom`` describe what is installed.

The build backend (setuptools >= 77, as pyproject.toml asks) comes from the package
index or pip's cache; without either the test is skipped.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tasklease.core.status import VERSION

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
    "__pycache__", "*.egg-info", "build", "dist",
)  # fmt: skip
# What a checkout gathers by running it; put into the copy the sdist is built from.
_LEFT_BEHIND = (
    "tests/artifacts/console-overview.png",
    "tests/core/__pycache__/test_x.cpython-311.pyc",
    "tests/.hypothesis/examples/0/1",
    "tests/core/.pytest_cache/v/cache/lastfailed",
    "tests/leftover.db",
    "tests/leftover.db-wal",
    "bench/results/20260101T000000Z.json",
    ".tasklease/keys/signing-1.pem",
    "src/tasklease/__pycache__/server.cpython-311.pyc",
)
_PASSPHRASE = "packaging-test-passphrase-0123456789"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TASKLEASE_", "PIP_REQUIRE"))
    }
    env.update({"COLUMNS": "200", "NO_COLOR": "1", **extra})
    return env


def _run(
    *args: str | Path, cwd: Path, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**extra),
        timeout=timeout,
        check=False,
    )


def _pip(target: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # This environment's pip, acting on another interpreter (the venvs have none).
    pip = (sys.executable, "-m", "pip", "--python", target, "--disable-pip-version-check")
    return _run(*pip, *args, cwd=cwd)


def _tracked(prefix: str = "") -> set[str] | None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        return None
    listed = _run("git", "ls-files", "-z", "--", prefix or ".", cwd=REPO)
    if listed.returncode != 0:
        return None
    return {name for name in listed.stdout.split("\0") if name}


def _latest_release() -> str:
    found = re.search(r"^## \[(\d+\.\d+\.\d+[^\]]*)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert found is not None, "CHANGELOG.md names no release"
    return found[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """The sdist from a copy of this tree, then the wheel from the extracted sdist."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_NOT_COPIED, symlinks=True)
    for name in _LEFT_BEHIND:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("left behind\n")
    backend = tmp_path / "backend"
    assert (
        _run(sys.executable, "-m", "venv", "--without-pip", backend, cwd=tmp_path).returncode == 0
    )
    python = backend / "bin" / "python"
    got = _pip(python, "install", "-q", "setuptools>=77", "wheel", cwd=tmp_path)
    if got.returncode != 0:
        pytest.skip(f"no package index or cache for the build backend: {got.stderr[-300:]}")
    out = tmp_path / "dist"
    out.mkdir()
    hook = "import sys; from setuptools import build_meta as b; print(b.build_{}(sys.argv[1]))"
    sdist = _run(python, "-c", hook.format("sdist"), out, cwd=source)
    assert sdist.returncode == 0, sdist.stderr
    sdist_path = out / sdist.stdout.strip().splitlines()[-1]
    unpacked = tmp_path / "unpacked"
    with tarfile.open(sdist_path) as archive:
        archive.extractall(unpacked, filter="data")
    [root] = unpacked.iterdir()
    wheel = _run(python, "-c", hook.format("wheel"), out, cwd=root)
    assert wheel.returncode == 0, wheel.stderr
    return sdist_path, out / wheel.stdout.strip().splitlines()[-1]


def _check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        top = f"tasklease-{VERSION}/"
        names = {m.name.removeprefix(top) for m in archive.getmembers() if m.isfile()}
    generated = {"PKG-INFO", "setup.cfg"}
    generated |= {n for n in names if n.startswith("src/tasklease.egg-info/")}
    for name in _LEFT_BEHIND:
        assert name not in names, f"the sdist ships {name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    must = {"pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md"}
    must |= {"tests/conftest.py", "docs/api.md", "src/tasklease/py.typed"}
    assert must <= names, sorted(must - names)
    tracked = _tracked()
    if tracked is not None:  # a checkout (not the sdist itself): all of it
        assert tracked - names == set(), sorted(tracked - names)[:20]
        # Files not yet added may ship; none that git is told to ignore.
        others = "\n".join(sorted(names - generated - tracked))
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", "--stdin"],
            input=others,
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert ignored.stdout.split() == [], ignored.stdout


def _check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"tasklease-{VERSION}.dist-info/"
        meta = email.message_from_bytes(archive.read(info + "METADATA"))
        entry_points = archive.read(info + "entry_points.txt").decode()
    ours = {n for n in names if not n.startswith(info)}
    package = REPO / "src"
    tracked = _tracked("src/tasklease")
    if tracked is not None:
        expected = {n.removeprefix("src/") for n in tracked}
    else:
        expected = {
            str(p.relative_to(package))
            for p in (package / "tasklease").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
    assert ours == expected, (sorted(ours - expected)[:20], sorted(expected - ours)[:20])
    assert "tasklease/py.typed" in ours
    assert any(n.startswith("tasklease/storage/migrations/sqlite/") for n in ours)
    assert any(n.startswith("tasklease/storage/migrations/postgres/") for n in ours)
    assert meta["Version"] == VERSION == _latest_release()
    assert re.search(r"^tasklease = tasklease\.cli:main$", entry_points, re.M), entry_points
    # The default install is the SDK and the verifier: httpx and PyNaCl, nothing else.
    plain = sorted(
        re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower()
        for r in meta.get_all("Requires-Dist") or []
        if "extra ==" not in r
    )
    assert plain == ["httpx", "pynacl"], plain


def test_sdist_and_wheel_install_and_run_away_from_the_tree(tmp_path: Path) -> None:
    sdist, wheel = _build(tmp_path)
    _check_sdist(sdist)
    _check_wheel(wheel)

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python, command = venv / "bin" / "python", venv / "bin" / "tasklease"
    installed = _pip(python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    # The dependencies: this environment's, as a path (its .pth files, among them the
    # editable install of this tree, are not read from there).
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    home = tmp_path / "home"
    home.mkdir()
    where = _run(python, "-c", "import tasklease; print(tasklease.__file__)", cwd=home)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    assert (site / "tasklease" / "py.typed").is_file()

    version = _run(command, "--version", cwd=home, HOME=str(home))
    assert (version.returncode, version.stdout) == (0, f"tasklease {VERSION}\n"), version.stderr

    data = home / "data"
    env = {"HOME": str(home), "TASKLEASE_KEY_PASSPHRASE": _PASSPHRASE}
    init = _run(
        command, "init", "--data-dir", data, "--secret-file", home / "secret", cwd=home, **env
    )
    assert init.returncode == 0, init.stderr
    doctor = _run(command, "doctor", "--data-dir", data, "--json", cwd=home, **env)
    assert doctor.returncode == 0, (doctor.stdout, doctor.stderr)
    assert json.loads(doctor.stdout)["passed"] is True

    sbom = _run(command, "sbom", cwd=home, **env)
    assert sbom.returncode == 0, sbom.stderr
    bom = json.loads(sbom.stdout)
    assert bom["metadata"]["component"]["version"] == VERSION
    assert {c["name"].lower() for c in bom["components"]} >= {"httpx", "pynacl", "typer"}

    port = _free_port()
    secret = (home / "secret").read_text().strip()
    serve_env = _env(**env, TASKLEASE_ADMIN_SECRET=secret, TASKLEASE_METRICS_LISTEN="off")
    args = [command, "serve", "--data-dir", data, "--host", "127.0.0.1", "--port", str(port)]
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(args, cwd=home, env=serve_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (home / "serve.log").read_text()
                try:
                    if client.get("/v1/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (home / "serve.log").read_text()
                time.sleep(0.2)
            login = client.get("/console/login")
            assert login.status_code == 200 and "Sign in" in login.text
            assets = re.findall(r'(?:href|src)="(/console/static/[^"]+)"', login.text)
            assert len(assets) >= 2, login.text
            for asset in assets:
                served = client.get(asset)
                assert served.status_code == 200 and served.content, asset
            document = client.get("/v1/openapi.json")
            assert document.status_code == 200 and document.json()["openapi"].startswith("3.")
        # The version the broker reports, asked as an operator would.
        status = _run(
            command,
            "status",
            "--json",
            cwd=home,
            **env,
            TASKLEASE_ADMIN_SECRET=secret,
            TASKLEASE_URL=f"http://127.0.0.1:{port}",
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["version"] == VERSION
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
