"""The training corpus: the King James Bible as printed by Debian's `bible` command (package bible-kjv,
data in bible-kjv-text; public domain), and its train / held-out split.

Split: the text is cut into its 1,189 chapters (each starts at a "<Book> <n>" heading line). Every
20th chapter (chapter index i, counted from 0 over the whole Bible, with i % 20 == 19) is held out:
59 chapters, about 5 % of the bytes, spread over all books so the held-out text has the same style
as the training text. Held-out chapters are never trained on. Training text = the other chapters
concatenated in Bible order; held-out text = the held-out chapters concatenated in Bible order.

Bytes map to token ids as id = byte + 2 (vocab 258; 0 = pad, 1 unused).
"""

import hashlib
import re
import subprocess

BIBLE_CMD = ["bible", "-l80", "Gen1:1-Rev22:21"]
HELDOUT_EVERY = 20
HELDOUT_INDEX = 19
_HEADING = re.compile(rb"^(?:[1-3] )?[A-Z][A-Za-z ]* [0-9]+$")


def dump_kjv():
    """Returns the whole KJV text as bytes (deterministic: fixed line width 80)."""
    out = subprocess.run(BIBLE_CMD, check=True, stdout=subprocess.PIPE).stdout
    if len(out) < 4_000_000:
        raise RuntimeError("bible printed only %d bytes" % len(out))
    return out


def chapters(text):
    """Splits the text into chapters; each chapter starts with its heading line."""
    lines = text.split(b"\n")
    starts = []
    offset = 0
    prev_blank = True
    for line in lines:
        if prev_blank and _HEADING.match(line):
            starts.append(offset)
        prev_blank = (line.strip() == b"")
        offset += len(line) + 1
    out = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        out.append(text[s:e])
    return out


def split(text):
    """Returns (train_bytes, heldout_bytes, info dict)."""
    chs = chapters(text)
    train = [c for i, c in enumerate(chs) if i % HELDOUT_EVERY != HELDOUT_INDEX]
    held = [c for i, c in enumerate(chs) if i % HELDOUT_EVERY == HELDOUT_INDEX]
    tr, he = b"".join(train), b"".join(held)
    info = {
        "source_command": " ".join(BIBLE_CMD),
        "total_bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "chapters": len(chs),
        "heldout_rule": "chapter index i (0-based over the whole Bible) with i %% %d == %d" % (HELDOUT_EVERY,
                                                                                           HELDOUT_INDEX),
        "heldout_chapters": len(held),
        "heldout_headings": [c.split(b"\n", 1)[0].decode() for c in held],
        "train_bytes": len(tr),
        "heldout_bytes": len(he),
    }
    return tr, he, info


def to_ids(data):
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.long) + 2


def heldout_documents(heldout, doc_len):
    """Non-overlapping doc_len-byte windows of the held-out text, in order (the remainder is dropped)."""
    n = len(heldout) // doc_len
    return [heldout[i * doc_len:(i + 1) * doc_len] for i in range(n)]


def sample_text(heldout, max_bytes=4096):
    """The first held-out chapter(s), cut at a line end, at most max_bytes: models/default/heldout_sample.txt."""
    cut = heldout[:max_bytes]
    return cut[:cut.rfind(b"\n") + 1]
