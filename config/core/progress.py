"""Progress for long management commands: ``done/total`` on one line that rewrites itself
on a terminal, or a line every tenth of the work when the output is a file or a pipe."""

import sys
from typing import TextIO


class Progress:
    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool = True):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_tenth = -1

    def _write(self, text: str) -> None:
        # A command's self.stderr (Django's OutputWrapper, which adds an ending and colours
        # stderr red): write the text plain, as given.
        if hasattr(self.stream, "style_func") and hasattr(self.stream, "ending"):
            self.stream.write(text, style_func=lambda t: t, ending="")
        else:
            self.stream.write(text)

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self._tty:
            end = "\n" if done >= total else ""
            self._write(f"\r{self.label}: {done}/{total}{end}")
            self.stream.flush()
            return
        tenth = done * 10 // total
        if tenth != self._last_tenth or done >= total:
            self._last_tenth = tenth
            self._write(f"{self.label}: {done}/{total} ({done * 100 // total}%)\n")
