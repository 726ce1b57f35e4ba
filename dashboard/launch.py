"""Starting the dashboard: check the working directory, then the ``streamlit run`` command line and environment.

`journey dashboard` replaces its own process with Streamlit's server (``os.execv``), so the server has the
command's PID: stop it with SIGTERM to that PID. Streamlit runs headless (no browser opened, no usage
statistics) on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dashboard.config import DashboardConfig
from dashboard.data import require_scores

APP = Path(__file__).resolve().with_name("app.py")


def check(config: DashboardConfig) -> None:
    """Fail with one clear line (a ValueError) when the working directory has no scores yet."""
    require_scores(config.root)


def streamlit_command(config: DashboardConfig) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", config.host, "--server.port", str(config.port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]


def environment(config: DashboardConfig) -> dict[str, str]:
    """The server's environment: the config as JOURNEY_DASHBOARD_* and the registry as MLFLOW_TRACKING_URI."""
    env = dict(os.environ)
    env.update(config.to_env())
    env.setdefault("MLFLOW_TRACKING_URI", config.resolved_tracking_uri())
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # the app imports the project from the repository or the installed package, wherever the server starts
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APP.parent.parent), env.get("PYTHONPATH", "")) if p)
    return env


def exec_dashboard(config: DashboardConfig) -> None:
    """Check, print where it listens, and become the Streamlit server (does not return)."""
    check(config)
    print(f"Journey dashboard on http://{config.host}:{config.port} (workdir {config.root}); stop it with Ctrl-C",
          flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, streamlit_command(config), environment(config))


__all__ = ["APP", "check", "environment", "exec_dashboard", "streamlit_command"]
