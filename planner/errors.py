"""The one exception type the planner raises for bad input.

The CLI turns it into a single stderr line and exit code 2; the GUI shows it beside the field.
"""


class PlannerError(ValueError):
    """Bad user input: the message says what is wrong and how to fix it, in one line."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        """The TrainSetup field at fault (the GUI puts the message beside its widget); "" when the
        input as a whole is (an unknown model, a config file that does not parse)."""


def shown(value: object, limit: int = 40) -> str:
    """``value`` as a one-line error message quotes it: short, and never the whole of a 400-digit
    number, a megabyte string or a list nested a thousand deep (whose repr itself would fail)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value).bit_length() < 10_000 else None
        if digits is not None and digits <= limit:
            return repr(value)
        return f"a {digits or 'many'}-digit number"
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "..."
        return repr(text)
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
