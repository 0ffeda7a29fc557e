"""The one exception type the planner raises for bad input.

The CLI turns it into a single stderr line and exit code 2; the GUI shows it beside the field.
"""


class PlannerError(ValueError):
    """Bad user input: the message says what is wrong and how to fix it, in one line."""
