"""Set-up checks run by scripts/bootstrap.sh: repair torchaudio's CUDA-linked native libraries.

pyannote.audio 4 pulls a torchaudio build whose `lib/*.so` link against CUDA libraries that a
CPU-only torch does not have, so `import torchaudio` fails. pyannote only needs torchaudio's
pure-Python parts (kaldi fbank, resampling), so the broken native libraries are moved aside.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def _torchaudio_imports() -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-c", "import torchaudio, torchaudio.compliance.kaldi"],
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def repair_torchaudio() -> str:
    """Return a sentence saying what was found and done; raise SystemExit when repair fails."""
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.origin:
        return "torchaudio is not installed (pyannote.audio will install it)"
    ok, err = _torchaudio_imports()
    if ok:
        return "torchaudio imports fine; nothing to repair"
    lib = Path(spec.origin).parent / "lib"
    moved = []
    for so in sorted(lib.glob("*.so")):
        so.rename(so.with_suffix(".so.cuda-disabled"))
        moved.append(so.name)
    ok, err2 = _torchaudio_imports()
    if not ok:
        raise SystemExit(f"torchaudio still fails to import after the repair: {err2}")
    return (
        f"torchaudio failed to import ({err}); moved its CUDA-linked native libraries aside "
        f"({', '.join(moved)}); it now imports with its Python parts, which pyannote needs"
    )


def main() -> None:
    print("  torchaudio:", repair_torchaudio())


if __name__ == "__main__":
    main()
