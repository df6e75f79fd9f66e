"""A stand-in for the BTU app, just its task runner's entry points (see ``btu_core/task_runner.py``)."""
