"""Regenerate the speech clips in ``sim/clips`` (8 kHz mu-law, headerless).

Real speech made reproducibly: espeak-ng speaks each line, sox converts it to
8 kHz mono mu-law. The clips are committed, so this only runs when the list
changes: ``python -m sim.make_clips`` (needs Debian's espeak-ng and sox).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["CLIPS", "make_clips"]

CLIPS_DIR = Path(__file__).parent / "clips"

# name -> (voice, words per minute, text)
CLIPS: dict[str, tuple[str, int, str]] = {
    "caller_hello": ("en-us", 165, "Hello? Who is this?"),
    "caller_question": ("en-us", 165, "What times do you have on Monday?"),
    "caller_interrupt": ("en-us", 175, "Wait, sorry, can I ask something first?"),
    "caller_yes": ("en-us", 165, "Yes, four o'clock works for me."),
    "caller_thanks": ("en-us", 165, "Great, thank you. Goodbye."),
    "agent_greeting": ("en-gb", 170, "Hello! This is Ava calling from Bright Smiles Dental."),
    "agent_reply_short": ("en-gb", 170, "Sure, I can help with that."),
    "agent_reply_long": (
        "en-gb",
        170,
        "We have openings on Monday at four, Tuesday at three thirty, and Thursday at five."
        " Which one would you prefer?",
    ),
    "agent_confirm": ("en-gb", 170, "Perfect, you are booked for Monday at four. Goodbye!"),
    "agent_still_there": ("en-gb", 170, "Are you still there?"),
}


def make_clips(folder: Path = CLIPS_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, wpm, text) in CLIPS.items():
            wav = Path(tmp) / f"{name}.wav"
            out = folder / f"{name}.ulaw"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True
            )
            subprocess.run(
                [
                    "sox",
                    "-D",
                    str(wav),
                    "-t",
                    "raw",
                    "-e",
                    "mu-law",
                    "-r",
                    "8000",
                    "-c",
                    "1",
                    str(out),
                ],
                check=True,
            )
            written.append(out)
    return written


if __name__ == "__main__":
    for path in make_clips(Path(sys.argv[1]) if len(sys.argv) > 1 else CLIPS_DIR):
        print(f"{path} {path.stat().st_size} bytes ({path.stat().st_size / 8000:.2f} s)")
