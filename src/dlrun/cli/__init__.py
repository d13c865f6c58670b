"""The console scripts, thin: dlrun (train), dlrun-predict, dlrun-report, dlrun-stats."""
