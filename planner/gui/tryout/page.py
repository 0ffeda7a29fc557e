"""The Try page: load a finished or stopped run (or a peft adapter folder), chat with it, answer one
prompt with the base and the tuned model side by side, try prompts from the run's held-out
examples, score base against tuned, and see its memory predicted against measured.

Generation is ``python -m trainer generate`` in a subprocess (``GenerateProcess``): this page
never imports torch. Side by side, the second pane's answer is asked for once the first is done
(the session answers one request at a time), so Stop ends both.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from planner.gui.state import AppState
from planner.gui.tryout.panes import AnswerPane, MemoryBars, fmt_bytes
from planner.gui.tryout.process import GenerateProcess
from planner.trying import predicted_bytes
from trainer.protocol import Event
from trainer.rundir import is_run_dir

DEFAULT_NEW_TOKENS = 256
BOTTOM_HEIGHT = 230
"""px for the prompt, the settings and the memory chart: the conversations take the rest."""


class TryPage(QWidget):
    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.process = GenerateProcess(self)
        self.process.event.connect(self._on_event)
        self.process.finished.connect(self._on_finished)
        self.process.log.connect(self._on_log)
        self.names: list[str] = []
        self.examples: list[tuple[str, str]] = []
        """(prompt, reference) of the run's held-out examples."""
        self.weights_bytes: int | None = None
        self.peak_bytes: int | None = None
        self._count = 0
        self._pending: tuple[str, str] | None = None
        """(pane key, prompt) still to ask once the current answer is done (side by side)."""
        self._busy: str | None = None
        """The pane key answering now."""
        self._errors: list[str] = []
        self._scores: dict[str, str] = {}
        self.run_dir: Path | None = None
        self._reload = False
        self.device_used = "cpu"
        self.shape: tuple[int, int] | None = None
        """(prompt, new) tokens of the last measured answer: what its prediction is made for."""

        self.run_edit = QLineEdit(str(state.settings.value("try/run", "")))
        self.run_edit.setPlaceholderText("a run folder, a peft adapter folder or a model folder")
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose)
        self.other_edit = QLineEdit()
        self.other_edit.setPlaceholderText("optional: a 2nd adapter of this base")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self.load)
        self.status = QLabel("Load a finished or stopped run to try it.")
        self.status.setWordWrap(True)
        top = QHBoxLayout()
        for widget, stretch in ((QLabel("Run or adapter:"), 0), (self.run_edit, 3), (choose, 0),
                                (self.other_edit, 2), (QLabel("Device:"), 0), (self.device, 0),
                                (self.load_button, 0)):
            top.addWidget(widget, stretch)

        self.left, self.right = AnswerPane("Answer:"), AnswerPane("Compare:")
        self.side_by_side = QCheckBox("Side by side")
        self.side_by_side.setToolTip("Answer every prompt in both panes: the same loaded model, adapter on and off")
        self.side_by_side.setChecked(True)
        self.side_by_side.toggled.connect(self.right.setVisible)
        panes = QSplitter(Qt.Orientation.Horizontal)
        panes.addWidget(self.left)
        panes.addWidget(self.right)

        self.example_list = QListWidget()
        self.example_list.itemClicked.connect(self._use_example)
        self.reference = QLabel("")
        self.reference.setWordWrap(True)
        self.reference.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.score_button = QPushButton("Score base and tuned")
        self.score_button.setToolTip("Loss and greedy token accuracy on the run's held-out examples")
        self.score_button.clicked.connect(self.score)
        self.score_label = QLabel("")
        self.score_label.setWordWrap(True)
        side = QVBoxLayout()
        side.addWidget(QLabel("Held-out examples (click one to use it):"))
        side.addWidget(self.example_list, 1)
        side.addWidget(self.reference)
        side.addWidget(self.score_button)
        side.addWidget(self.score_label)
        side_widget = QWidget()
        side_widget.setLayout(side)
        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.addWidget(panes)
        middle.addWidget(side_widget)
        middle.setStretchFactor(0, 3)
        middle.setStretchFactor(1, 1)
        middle.setSizes([900, 300])

        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Your prompt (Ctrl+Return sends)")
        self.prompt.setMaximumHeight(120)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt, activated=self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        clear = QPushButton("Clear")
        clear.setToolTip("Start new conversations")
        clear.clicked.connect(self._clear)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, decimals=2)
        self.temperature.setToolTip("0: greedy (the most likely token every time)")
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, decimals=2, value=1.0)
        self.max_new = QSpinBox(minimum=1, maximum=32768, value=DEFAULT_NEW_TOKENS)
        self.measure = QCheckBox("Measure memory on the CPU")
        self.measure.setToolTip("Counts every tensor while answering (slower); a GPU is always measured")
        settings = QFormLayout()
        settings.addRow("Temperature:", self.temperature)
        settings.addRow("Top-p:", self.top_p)
        settings.addRow("Max new tokens:", self.max_new)
        settings.addRow(self.measure)
        buttons = QVBoxLayout()
        for b in (self.send_button, self.stop_button, clear, self.side_by_side):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.memory = MemoryBars()
        self.memory_label = QLabel("")
        self.memory_label.setWordWrap(True)
        memory = QVBoxLayout()
        memory.addWidget(self.memory, 1)
        memory.addWidget(self.memory_label)
        bottom_widget = QWidget()
        bottom_widget.setMaximumHeight(BOTTOM_HEIGHT)  # the conversations get the rest
        bottom = QHBoxLayout(bottom_widget)
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.prompt, 3, Qt.AlignmentFlag.AlignTop)
        bottom.addLayout(buttons)
        bottom.addLayout(settings)
        bottom.addLayout(memory, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(middle, 1)
        layout.addWidget(bottom_widget)
        self._enable()

    # -- loading ---------------------------------------------------------------------------------
    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A run or adapter folder", self.run_edit.text()
                                                  or str(self.state.runs_root))
        if folder:
            self.run_edit.setText(folder)

    def load(self) -> None:
        path = Path(self.run_edit.text().strip()).expanduser()
        if not path.is_dir():
            self.status.setText(f"{path} is not a folder: choose a run folder or a peft adapter folder.")
            return
        if self.process.is_running():  # another session is open: end it, then load (on its exit)
            self._reload = True
            self.process.kill()
            return
        self.state.settings.setValue("try/run", str(path))
        others = [f"other={self.other_edit.text().strip()}"] if self.other_edit.text().strip() else []
        self._reset()
        self.status.setText(f"Loading {path.name}…")
        device = self.device.currentText()
        if is_run_dir(path):
            self.process.open(run_dir=path, adapters=others, device=device)
        elif (path / "adapter_config.json").is_file() or not (path / "config.json").is_file():
            self.process.open(adapters=[f"adapter={path}", *others], device=device)  # what it lacks, it says
        else:  # a model folder: a merged export, say
            self.process.open(model=path, adapters=others, device=device)
        self.run_dir = path if is_run_dir(path) else None
        self._enable()

    def _reset(self) -> None:
        self.names, self.examples, self._errors = [], [], []
        self.weights_bytes = self.peak_bytes = None
        self.shape = None
        self._pending = self._busy = None
        self.example_list.clear()
        self.reference.clear()
        self.score_label.clear()
        self.left.clear()
        self.right.clear()
        self._show_memory()

    # -- asking ----------------------------------------------------------------------------------
    def send(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt or not self.names or self._busy:
            return
        self.prompt.clear()
        if self.side_by_side.isChecked() and len(self.names) > 1:
            self._pending = ("right", prompt)
        self._ask("left", prompt)

    def _ask(self, key: str, prompt: str) -> None:
        pane = self.left if key == "left" else self.right
        self._count += 1
        self._busy = f"{key}-{self._count}"
        self.process.request("generate", self._busy, messages=pane.ask(prompt), adapter=pane.name,
                             temperature=self.temperature.value(), top_p=self.top_p.value(),
                             max_new_tokens=self.max_new.value(), measure=self.measure.isChecked())
        self._enable()

    def stop(self) -> None:
        self._pending = None
        self.process.stop_generating()

    def score(self) -> None:
        if not self.names or self._busy:
            return
        self.score_label.setText("Scoring…")
        self._scores = {}
        self._busy = "score"
        for name in self.names:
            self.process.request("score", f"score-{name}", adapter=name)
        self._enable()

    def _use_example(self, item: QListWidgetItem) -> None:
        prompt, reference = self.examples[self.example_list.row(item)]
        self.prompt.setPlainText(prompt)
        self.reference.setText(f"Reference answer: {reference}" if reference else "")

    def _clear(self) -> None:
        self.left.clear()
        self.right.clear()

    # -- events ----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        kind, rid = event.kind, str(event.get("id", ""))
        pane = self.left if rid.startswith("left") else self.right
        if kind == "ready":
            self._ready(event)
        elif kind == "token":
            pane.add_text(str(event["text"]))
        elif kind == "done":
            pane.finish(str(event["status"]), int(event["new_tokens"] or 0), _float(event["ttft_s"]),
                        _float(event["tokens_per_s"]))
            if event.get("peak_alloc_bytes") is not None:
                self.peak_bytes = int(event["peak_alloc_bytes"] or 0)
                self.shape = (int(event.get("prompt_tokens") or 0), int(event["new_tokens"] or 0))
                self._show_memory()
            self._busy = None
            pending, self._pending = self._pending, None
            if pending and event["status"] != "stopped":  # side by side: the second pane's turn
                self._ask(*pending)
        elif kind == "example":
            messages = json.loads(str(event["messages_json"]))
            prompt = messages[-1]["content"] if messages else ""
            self.examples.append((prompt, str(event["reference"])))
            self.example_list.addItem(prompt.splitlines()[0][:120] if prompt else "(empty)")
        elif kind == "score":
            self._scores[str(event["adapter"])] = (f"{event['adapter']}: loss {_float(event['loss']) or 0:.3f}, "
                                                   f"token accuracy {(_float(event['token_accuracy']) or 0):.1%}")
            if len(self._scores) == len(self.names):
                self.score_label.setText("\n".join(self._scores[n] for n in self.names)
                                         + f"\n({event['examples']} {event.get('split', '')} examples)")
                self._busy = None
        elif kind == "error":
            if rid.startswith(("left", "right", "score")):
                self._busy, self._pending = None, None
            if rid.startswith("examples"):
                self.example_list.addItem("(no examples: this folder has no run data)")
            else:
                self.status.setText(f"{event['message']}. {event['hint']}")
        self._enable()

    def _ready(self, event: Event) -> None:
        self.names = str(event["adapters"]).split(",")
        first = self.names[1] if len(self.names) > 1 else self.names[0]
        self.left.set_names(self.names, first)
        self.right.set_names(self.names, self.names[0])
        self.right.setVisible(self.side_by_side.isChecked() and len(self.names) > 1)
        for box, key in ((self.temperature, "temperature"), (self.top_p, "top_p")):
            if event.get(key) is not None:
                box.setValue(float(event[key]))  # type: ignore[arg-type]
        if event.get("max_new_tokens"):
            self.max_new.setValue(int(event["max_new_tokens"]))  # type: ignore[arg-type]
        self.weights_bytes = int(event["weights_bytes"])  # type: ignore[arg-type]
        self.device_used = str(event["device"])
        self.status.setText(f"Ready on {event['device']}: {event['model']}, weights {fmt_bytes(self.weights_bytes)}, "
                            f"loaded in {float(event['load_s']):.1f} s. Answering: {', '.join(self.names)}.")
        self.process.request("examples", "examples", limit=50)
        self._show_memory()

    def _on_log(self, line: str) -> None:
        if line.startswith("error:"):
            self._errors.append(line[len("error:"):].strip())

    def _on_finished(self, code: int, status: str) -> None:
        if self._reload:
            self._reload = False
            self.names = []
            self.load()
            return
        if code != 0:
            why = self._errors[-1] if self._errors else f"the generate process ended with exit code {code}"
            self.status.setText(f"Cannot try this: {why}")
        self.names, self._busy, self._pending = [], None, None
        self._enable()

    # -- rendering -------------------------------------------------------------------------------
    def _show_memory(self) -> None:
        source = self.run_dir or Path(self.run_edit.text().strip()).expanduser()
        predicted = predicted_bytes(source, self.device_used, self.shape) if self.names else None
        self.memory.show_values((predicted.weights, predicted.peak) if predicted else (None, None),
                                (self.weights_bytes, self.peak_bytes))
        self.memory_label.setText(predicted.text if predicted else "")

    def _enable(self) -> None:
        ready = bool(self.names) and self.process.is_running()
        self.send_button.setEnabled(ready and not self._busy)
        self.stop_button.setEnabled(ready and bool(self._busy) and self._busy != "score")
        self.score_button.setEnabled(ready and not self._busy and len(self.names) > 1)

    def shutdown(self) -> None:
        """The window closes: end the session (the process exits after its current answer)."""
        if self.process.is_running():
            self.process.stop_generating()
            self.process.quit()


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
