"""``python -m planner``: with no command, open the desktop app."""

from planner.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
