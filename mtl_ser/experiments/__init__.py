"""What a mode of launch.py runs, on top of the library (see modes.py)."""
