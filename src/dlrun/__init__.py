"""dlrun: a command-line deep-learning experiment runner driven by Hydra configs.

The Python API (``dlrun.api``): ``dlrun.load_run(path)`` reads a run directory and
returns a ``Run`` (config, summary, metrics, ``predict``).
"""

__version__ = "0.1.0"

from dlrun.engine import cpuload  # noqa: E402  (torch-free)

cpuload.mark()  # device.threads=null measures the machine's load over start-up from here

from dlrun.api import Prediction, Run, load_run  # noqa: E402  (after __version__: they import it)

__all__ = ["Prediction", "Run", "__version__", "load_run"]
