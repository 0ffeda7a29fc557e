"""A form as one table: each field's name, label, widget and how the widget holds its value.

A form lists its fields once. Reading the values, filling them in, the `changed` connections,
the labels messages use, the number boxes whose text is checked and the error label under each
field all come from that list, so a new field is one line and no second list can miss it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSignalBlocker
from PySide6.QtWidgets import QLabel, QLayout, QWidget

from planner.gui.common.number_box import StrictDoubleSpinBox, StrictSpinBox

ERROR_STYLE = "color: #d32f2f;"  # a foreground colour, legible on light and dark palettes


@dataclass(frozen=True)
class Access:
    """How one kind of widget holds a value."""

    read: Callable[[Any], Any]
    write: Callable[[Any, Any], None]
    signals: Callable[[Any], tuple[Any, ...]]
    """The widget's signals that mean its value changed."""
    accepts: Callable[[Any], bool] = lambda value: True
    """Whether a value from outside (a config file, a plan) is one the widget can show; any
    other leaves the widget as it was."""


def _choose(box: Any, value: Any) -> None:
    if box.findText(str(value)) >= 0:  # a value the box does not offer leaves the choice as it was
        box.setCurrentText(str(value))


def _number_signals(spin: Any) -> tuple[Any, ...]:
    # the value follows Enter and focus-out; a refused entry ("4k") is said at once, as typed
    return spin.valueChanged, spin.lineEdit().textEdited


TEXT = Access(lambda w: w.text(), lambda w, v: w.setText(str(v)), lambda w: (w.textChanged,))
"""A QLineEdit's text."""
CHOICE = Access(lambda w: w.currentText(), _choose, lambda w: (w.currentTextChanged,))
"""A QComboBox's choice among its items."""
WHOLE = Access(lambda w: w.value(), lambda w, v: w.setValue(v), _number_signals, lambda v: isinstance(v, int))
"""A StrictSpinBox's value."""
DECIMAL = Access(lambda w: w.value(), lambda w, v: w.setValue(v), _number_signals,
                 lambda v: isinstance(v, (int, float)))
"""A StrictDoubleSpinBox's value."""
FLAG = Access(lambda w: w.isChecked(), lambda w, v: w.setChecked(v), lambda w: (w.toggled,),
              lambda v: isinstance(v, bool))
"""A QCheckBox's state."""


@dataclass(frozen=True)
class Field:
    name: str
    """The value's name in the form's dataclass or config (FormValues, TrainConfig)."""
    label: str
    """The row's label; "" for a checkbox, which carries its own text."""
    widget: QWidget
    access: Access
    shown: QWidget | QLayout | None = None
    """What the row shows when it is more than the widget (a Browse... button beside it)."""
    option: str | None = None
    """The CLI option planner messages name it by, when not ``--`` + the name with dashes."""

    def read(self) -> Any:
        return self.access.read(self.widget)

    def write(self, value: Any) -> None:
        if self.access.accepts(value):
            self.access.write(self.widget, value)

    @property
    def title(self) -> str:
        """What a message calls the field: its label, or a checkbox's own text."""
        return self.label or getattr(self.widget, "text", lambda: "")()

    @property
    def cli_option(self) -> str:
        return "--" + (self.option or self.name.replace("_", "-"))


@dataclass(frozen=True)
class Row:
    """A row of the form that shows something but holds no value (a label, a preview)."""

    label: str
    widget: QWidget


class FieldTable:
    """A form's fields, in the order they are read and written."""

    def __init__(self, fields: Iterable[Field]) -> None:
        self.fields = tuple(fields)
        self._by_name = {f.name: f for f in self.fields}

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.fields)

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def values(self) -> dict[str, Any]:
        return {f.name: f.read() for f in self.fields}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Write the given fields; names the table does not have, and values a widget cannot
        show, are left out."""
        for f in self.fields:
            if f.name in values:
                f.write(values[f.name])

    def widgets(self) -> tuple[QWidget, ...]:
        return tuple(dict.fromkeys(f.widget for f in self.fields))

    def blocked(self) -> ExitStack:
        """``with table.blocked():`` every widget stays quiet (one `changed` for a batch of writes)."""
        stack = ExitStack()
        for widget in self.widgets():
            stack.enter_context(QSignalBlocker(widget))
        return stack

    def connect(self, slot: Callable[..., Any]) -> None:
        """``slot`` hears every change of every field (once per signal: two fields may share a widget)."""
        signals: list[Any] = []
        for f in self.fields:
            signals += [s for s in f.access.signals(f.widget) if not any(s == t for t in signals)]
        for signal in signals:
            signal.connect(slot)

    def numbers(self) -> tuple[Field, ...]:
        """The fields typed into a strict number box, whose text may not be a value."""
        return tuple(f for f in self.fields if isinstance(f.widget, (StrictSpinBox, StrictDoubleSpinBox)))

    def input_problem(self) -> tuple[Field, str] | None:
        """The first number box whose text is not a value, and why ("'4k' is not ...")."""
        for f in self.numbers():
            if (problem := f.widget.problem()) is not None:
                return f, problem
        return None

    def named_in(self, message: str) -> tuple[Field, str] | None:
        """The field a planner message is about (it names the option: ``--batch-size``) and the
        option as written there; None when it names none of the form's."""
        match = re.search(r"--[a-z-]+", message)
        if match is None:
            return None
        field = next((f for f in self.fields if f.cli_option == match.group(0)), None)
        return (field, match.group(0)) if field is not None else None


def error_label() -> QLabel:
    """The message under a field: red, wrapped, hidden until there is one."""
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.hide()
    return label
