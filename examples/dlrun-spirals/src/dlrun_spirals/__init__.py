"""dlrun-spirals: an example dlrun task plugin (the task lives in ``dlrun_spirals.spirals``)."""
