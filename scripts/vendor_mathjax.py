"""Put MathJax into the docs site, so that its pages render maths offline.

    python scripts/vendor_mathjax.py DEST

fetches MathJax's npm package with `npm pack` (the ordinary client; pinned version, checked
against the registry's sha512 integrity) and extracts into ``DEST`` what the site uses:
``tex-mml-chtml.js``, the CHTML output's woff-v2 fonts (which the script loads relative to its
own location) and the licence (Apache-2.0). ``make docs`` runs it into
``docs/javascripts/mathjax`` (ignored by git); nothing is fetched when ``DEST`` already holds
this version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
TARBALL = f"mathjax@{VERSION}"
#: The registry's `dist.integrity` of that version (`npm view mathjax@3.2.2 dist.integrity`).
INTEGRITY = (
    "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/"
    "O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
)
#: The package's size is about 3 MB: refuse anything far larger.
MAX_BYTES = 64 * 2**20
#: Inside the tarball (package/...): the script, its fonts, the licence.
WANTED = ("es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2/", "LICENSE")


def fetch() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        try:
            subprocess.run(
                ["npm", "pack", TARBALL, "--pack-destination", folder, "--silent"],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=300,
            )
        except FileNotFoundError:
            raise SystemExit("make docs needs npm (Node.js) to fetch MathJax") from None
        (tarball,) = Path(folder).glob("*.tgz")
        if tarball.stat().st_size > MAX_BYTES:
            raise SystemExit(f"{TARBALL}: more than {MAX_BYTES} bytes; refusing it")
        data = tarball.read_bytes()
    algorithm, _, expected = INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{TARBALL}: {algorithm} {digest} differs from the pinned {expected}")
    return data


def extract(data: bytes, dest: Path) -> list[Path]:
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if not member.isfile() or not name.startswith(WANTED):
                continue
            # Only names from the list above, without "..": nothing lands outside dest.
            if ".." in Path(name).parts:
                raise SystemExit(f"{TARBALL}: unexpected member {member.name!r}")
            source = archive.extractfile(member)
            assert source is not None
            target = dest / name.removeprefix("es5/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    dest = Path(argv[0])
    stamp = dest / "VERSION"
    if stamp.exists() and stamp.read_text().strip() == VERSION:
        return 0
    written = extract(fetch(), dest)
    if not (dest / "tex-mml-chtml.js").exists():
        raise SystemExit(f"{TARBALL}: no es5/tex-mml-chtml.js among {len(written)} files")
    stamp.write_text(VERSION + "\n")
    print(f"MathJax {VERSION}: {len(written)} files in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
