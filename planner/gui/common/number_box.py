"""Spin boxes that never change what the user typed into another number.

Qt's spin boxes drop a keystroke they cannot use, so "4k" became 4, "1e3" became 13 and "-4"
became 4; and in an English locale "24,5" read as 245 (the comma taken for a thousands
separator). These boxes keep such text on screen, leave the value as it was, and say why
(:meth:`problem`), so the form can put the message beside the field. They parse with the
widget's locale: "24,5" is 24.5 where the comma is the decimal separator.
"""

from __future__ import annotations

from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox


class _Strict:
    """validate(): text Qt would refuse keystroke by keystroke stays, as Intermediate (not a value)."""

    def validate(self, text: str, pos: int) -> object:
        state, fixed, new_pos = super().validate(text, pos)  # type: ignore[misc]
        if state == QValidator.State.Invalid:
            return QValidator.State.Intermediate, text, pos
        if state == QValidator.State.Acceptable and not self._well_grouped(text):
            return QValidator.State.Intermediate, text, pos
        return state, fixed, new_pos

    def _well_grouped(self, text: str) -> bool:
        """A group separator only where the locale itself would write one ("1,024", never "24,5")."""
        body = text.strip()
        separator = self.locale().groupSeparator()  # type: ignore[attr-defined]
        if not separator or separator not in body:
            return True
        return body == self.textFromValue(self.valueFromText(text))  # type: ignore[attr-defined]

    def problem(self) -> str | None:
        """Why the typed text is not this field's value ("'4k' is not ..."), None when it is."""
        if self.hasAcceptableInput():  # type: ignore[attr-defined]
            return None
        box: QSpinBox | QDoubleSpinBox = self  # type: ignore[assignment]
        kind = "a whole number" if isinstance(box, QSpinBox) else "a number"
        hint = f" (decimal separator '{box.locale().decimalPoint()}')" if kind == "a number" else ""
        low, high = box.textFromValue(box.minimum()), box.textFromValue(box.maximum())
        return f"'{box.cleanText()}' is not {kind} from {low} to {high}{hint}"


class StrictSpinBox(_Strict, QSpinBox):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        # the value follows Enter, focus-out and the arrows, not each keystroke: "4k" must not
        # pass through 4 on its way to being refused (Qt would then fall back to 4, not the old value)
        self.setKeyboardTracking(False)


class StrictDoubleSpinBox(_Strict, QDoubleSpinBox):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.setKeyboardTracking(False)
