"""`pip install .` (not editable) ships everything the CLI needs: the wheel, installed into a fresh
virtual environment, runs `mmlong ingest` with the default preset outside the repository."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile

from tests.conftest import ROOT


def test_wheel_install_runs_an_ingest(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("mmlong-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mmlong/recipes/ingest/pdf-144dpi.yaml" in names and "mmlong/recipes/train/mmprolong-128k.yaml" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # the dependencies come from this environment's site-packages, read as a plain path: its .pth files
    # (among them the editable install of this checkout) are not processed
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True)
    python = str(venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import mmlong; print(mmlong.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(site)), where
    run = subprocess.run([python, "-m", "mmlong.cli", "ingest", str(ROOT / "examples" / "annual-report.pdf"), "--out",
                          str(tmp_path / "ds"), "--workers", "1", "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "ingested 1 document(s)" in run.stdout
