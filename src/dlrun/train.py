"""``python -m dlrun.train`` (and ``torchrun -m dlrun.train``, as README shows): the ``dlrun``
console script, kept at this name for the commands people already run."""

from dlrun.cli.train import main

if __name__ == "__main__":
    main()
