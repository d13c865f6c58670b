"""What dlrun writes for people over many runs: the summary table (``runs``) and its plots."""
