"""``logger=wandb``: one Weights & Biases run per dlrun run, a sweep's jobs in one group.

Opened and ended through :mod:`dlrun.engine.trackers`, which chooses the trackers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dlrun import __version__
from dlrun.engine.trackers import _quiet, _require, _run_name, run_params
from dlrun.errors import UserError, first_line
from dlrun.rundir.layout import RunDir


def wandb_mode(mode: str) -> str | None:
    """``auto``: online with a configured key, else offline; ``WANDB_MODE`` wins over auto."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return None  # wandb reads it itself
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "online"
    return "online" if _netrc_key() else "offline"


def _netrc_key() -> bool:
    """Whether ``wandb login`` stored a key (in ~/.netrc, or $NETRC) for the W&B host."""
    import netrc
    from urllib.parse import urlparse

    hosts = {"api.wandb.ai"}
    if os.environ.get("WANDB_BASE_URL"):
        hosts.add(urlparse(os.environ["WANDB_BASE_URL"]).hostname or "")
    else:
        with contextlib.suppress(Exception):
            import wandb

            hosts.add(urlparse(wandb.Settings().base_url).hostname or "")
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(h) for h in hosts if h)


class WandbTracker:
    """One W&B run, its files under ``RUN_DIR/wandb/``."""

    name = "wandb"

    def __init__(self, data: dict, run_dir: Path, previous: dict | None, sweep: dict | None):
        wandb = _require("wandb")
        _quiet("wandb")
        settings = data["logger"]["wandb"]
        self.log_checkpoints = settings["log_checkpoints"]
        mode = wandb_mode(settings["mode"])
        tags = [data["task"]["name"], data["model"]["name"], f"dlrun-{__version__}"]
        try:
            self.run = wandb.init(
                project=settings["project"],
                entity=settings["entity"],
                dir=str(run_dir),
                id=previous["id"] if previous else None,
                resume="allow" if previous else None,
                mode=mode,
                group=sweep["group"] if sweep else None,
                name=_run_name(run_dir),
                config=run_params(data),
                tags=tags,
                reinit="create_new",
                settings=wandb.Settings(console="off"),
            )
        except Exception as exc:  # wandb.errors.CommError, UsageError, AuthenticationError...
            raise UserError(
                f"logger=wandb: could not start a W&B run ({first_line(exc, 200)}); "
                "logger.wandb.mode=offline logs without the network"
            ) from None
        self.record = {
            "id": self.run.id,
            "project": settings["project"],
            "mode": mode or os.environ.get("WANDB_MODE", ""),
        }

    @staticmethod
    def warm() -> None:
        """Import W&B's client before the run asks for its tracker run."""
        import wandb  # noqa: F401

    def log(self, values: dict[str, float], step: int) -> None:
        # Steps must not go back: W&B drops (with a warning) what a resume repeats.
        self.run.log(values, step=step)

    def finish(self, run: RunDir, status: str, tags: dict[str, str]) -> None:
        # Where the run came from (git commit, versions, data), beside the config.
        self.run.config.update(tags, allow_val_change=True)
        files = run.artifacts() + (run.checkpoint_files() if self.log_checkpoints else [])
        for path in files:
            self.run.save(str(path), base_path=str(run.path), policy="now")
        self.run.summary["status"] = status
        self.run.finish()

    def fail(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=130 if status == "interrupted" else 1)

    @staticmethod
    def parent(data: dict, sweep: Path) -> dict:
        """W&B has no nested runs: a sweep's jobs share one group, named after the sweep."""
        return {"group": f"{sweep.parent.name}_{sweep.name}"}
