"""``screenshot``: what a VM shows on its screen, kept as evidence and read by OCR.

Example (a ``checks:`` entry of a VM system in site.yaml)::

    - {kind: screenshot, text: ["Press Ctrl+Alt+Delete"], timeout: 120, unchanged_for: 30}

The screen is dumped (QMP ``screendump``, PNG) every ``interval`` seconds until every
``text`` is read on it (tesseract OCR; case and spacing ignored, and ``similarity``
forgives a misread glyph such as V read as U) or ``timeout``
passes. A screen that is all one colour never passes (a black or blue screen is no
proof of life), and a screen that stays pixel-identical for ``unchanged_for`` seconds
without the expected text ends the wait early: a hung boot. The last screenshot is
kept with its sha256; the result names each expected text and what OCR read.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from .base import CheckError, CheckResult, CheckSpecBase, SandboxGuard, Target, error_result, result
from .vm_target import VMTarget, vm_target

TESSERACT = "tesseract"
SCREEN_TEXT = 2000
"""Characters of what OCR read kept in the result: a whole 80x25 text screen."""


class ScreenshotCheck(CheckSpecBase):
    """Expected text on the VM's screen (OCR), and a screen that is alive."""

    kind: Literal["screenshot"] = "screenshot"
    text: list[str] = Field(default_factory=list, description="text that must be on the screen")
    timeout: float = Field(60.0, gt=0, description="seconds to wait for the text")
    unchanged_for: float = Field(
        20.0, gt=0, description="a screen identical this long without the text fails (hung)"
    )
    interval: float = Field(2.0, gt=0, description="seconds between screenshots")
    lang: str = Field("eng", description="tesseract language(s), e.g. eng or eng+deu")
    similarity: float = Field(
        0.85, gt=0, le=1, description="how closely OCR must read each text (1: exactly)"
    )

    def default_name(self) -> str:
        return "screenshot" + (f" shows {', '.join(map(repr, self.text))}" if self.text else "")


Spec = ScreenshotCheck
NETWORK = False
"""It reads the VM's screen through QEMU, not the network."""


def normalise(text: str) -> str:
    """Lower case, runs of whitespace as one space: how expected and read text are compared."""
    return re.sub(r"\s+", " ", text).strip().lower()


def closest(expected: str, text: str) -> tuple[float, str]:
    """The passage of ``text`` that reads most like ``expected``, and how alike (0..1).

    OCR of a console font confuses V and U, 0 and O: an exact match would cry wolf.
    """
    want, seen = normalise(expected), normalise(text)
    if want in seen:
        return 1.0, want
    best, passage, n = 0.0, "", len(want)
    for i in range(max(1, len(seen) - n + 1)):
        window = seen[i : i + n]
        ratio = difflib.SequenceMatcher(None, want, window, autojunk=False).ratio()
        if ratio > best:
            best, passage = ratio, window
    return best, passage


def uniform_colour(path: Path) -> str | None:
    """``#rrggbb`` if the whole image is one colour, else ``None``."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        low, high = zip(*rgb.getextrema(), strict=True)
        if low != high:
            return None
        return "#" + "".join(f"{v:02x}" for v in low)


def pixels_digest(path: Path) -> str:
    """A digest of the pixels (not the PNG bytes): equal when the screen did not change."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        return hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()


def ocr(path: Path, lang: str = "eng", timeout: float = 60.0) -> str:
    """The text tesseract reads on a screenshot (grey, dark-on-light, doubled in size)."""
    from PIL import Image, ImageOps, ImageStat

    if not shutil.which(TESSERACT):
        raise CheckError("OCR needs tesseract: apt-get install tesseract-ocr")
    with Image.open(path) as image:
        grey = image.convert("L")
    if ImageStat.Stat(grey).mean[0] < 128:
        grey = ImageOps.invert(grey)
    grey = grey.point(lambda v: 255 if v > 128 else 0)  # crisp glyphs read best, tripled
    grey = grey.resize((grey.width * 3, grey.height * 3), Image.Resampling.LANCZOS)
    with tempfile.TemporaryDirectory(prefix="restoredrill-ocr-") as tmp:
        prepared = Path(tmp) / "screen.png"
        grey.save(prepared)
        try:
            done = subprocess.run(
                [TESSERACT, str(prepared), "stdout", "-l", lang, "--psm", "3"],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CheckError(f"tesseract did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise CheckError(f"tesseract failed: {said[0]}")
    return done.stdout


def _look(vm: VMTarget, spec: Spec, shot: Path) -> dict[str, Any]:
    vm.screendump(shot)
    colour = uniform_colour(shot)
    text = "" if colour else ocr(shot, spec.lang)
    found = {t: closest(t, text) for t in spec.text}
    return {
        "path": shot,
        "colour": colour,
        "text": text,
        "found": {t: passage for t, (ratio, passage) in found.items() if ratio >= spec.similarity},
        "missing": [t for t, (ratio, _) in found.items() if ratio < spec.similarity],
        "pixels": pixels_digest(shot),
    }


def run(spec: Spec, target: Target, guard: SandboxGuard) -> list[CheckResult]:
    """Dump and read the screen until it shows the text, freezes, or time runs out."""
    started = time.perf_counter()
    try:
        vm = vm_target(target, "screenshot")
        folder = vm.screens_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{vm.name}-{spec.label()}")[:80]
        deadline = time.monotonic() + spec.timeout
        last, same_since, n = None, time.monotonic(), 0
        while True:
            n += 1
            look = _look(vm, spec, folder / f"{stem}-{n}.png")
            if last is not None:
                last["path"].unlink(missing_ok=True)  # keep the newest screenshot only
                if last["pixels"] != look["pixels"]:
                    same_since = time.monotonic()
            last = look
            frozen = time.monotonic() - same_since
            if not look["colour"] and not look["missing"]:
                return [_result(spec, True, look, started, "")]
            if frozen >= spec.unchanged_for:
                why = f"the screen did not change for {frozen:.0f}s"
                return [_result(spec, False, look, started, why)]
            if time.monotonic() + spec.interval > deadline:
                return [_result(spec, False, look, started, f"not seen within {spec.timeout:g}s")]
            time.sleep(spec.interval)
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return [error_result(spec, exc, started)]


def _result(spec: Spec, ok: bool, look: dict[str, Any], started: float, why: str) -> CheckResult:
    path: Path = look["path"]
    screen = f"all one colour ({look['colour']})" if look["colour"] else "shows content"
    read = re.sub(r"\s+", " ", look["text"]).strip()
    observed = {
        "screen": screen,
        "text": read[:SCREEN_TEXT],
        "found": look["found"],
        "missing": look["missing"],
        "screenshot": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    message = why
    if not ok and look["missing"]:
        message = f"{why}: expected text {', '.join(map(repr, look['missing']))} not on the screen"
    elif not ok and look["colour"]:
        message = f"{why}: the screen is {screen}"
    return result(
        spec,
        ok,
        expected={"text": spec.text, "screen": "shows content"},
        observed=observed,
        started=started,
        message=message,
    )
