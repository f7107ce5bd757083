"""Ray is optional: the plain server never imports it, and `--replicas` without it says how to install it."""

from __future__ import annotations

import subprocess
import sys

from test_server_support import REPO

WITHOUT_RAY = "import sys; sys.modules['ray'] = None\n"  # any `import ray...` now raises ImportError


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_RAY + code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_plain_server_builds_without_ray():
    done = run_python("from lucid.server.app import build_app\nfrom lucid.server.state import ServerState\n"
                      "import lucid.server.cli_serve\nbuild_app(ServerState(lambda: None))\n"
                      "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules if sys.modules[m])\n"
                      "print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_replicas_without_ray_exit_2_with_the_install_hint():
    done = run_python("from lucid.server.cli_serve import main\nraise SystemExit(main(['--replicas', '2']))")
    assert done.returncode == 2, done.stderr
    assert "pip install 'lucid[cluster]'" in done.stderr


def test_bad_replica_counts_are_refused():
    done = run_python("from lucid.server.cli_serve import main\nraise SystemExit(main(['--replicas', '0']))")
    assert done.returncode == 2 and "at least 1" in done.stderr
