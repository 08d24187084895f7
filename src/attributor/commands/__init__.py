"""CLI sub-applications (``attributor <group> <command>``), composed by :mod:`attributor.cli`.

Each module defines ``app = typer.Typer(...)`` and imports its heavy dependencies inside
the commands, so ``attributor --help`` stays fast.
"""
