"""Title and description metadata for static figure files (PDF, SVG).

kaleido renders figures in a page titled "Kaleido-fier", and Chromium's print-to-PDF copies that
page title into the PDF's document information dictionary, so every PDF the workbench wrote said
``/Title (Kaleido-fier)`` in a viewer's title bar, file properties and search index. SVG files had
no ``<title>`` at all. After kaleido writes a file, these functions put the figure's own title (and
its caption as the description) there:

- PDF: an *incremental update* (ISO 32000-1 §7.5.6): a new document information dictionary
  (``/Title``, ``/Subject``, ``/Creator``; ``/Producer`` and ``/CreationDate`` kept) replaces the old
  one under the same object number, with its own cross-reference section (subsection 0, the head
  of the free list, and that object) and a trailer whose ``/Prev`` points at the previous one.
  The bytes kaleido wrote are kept as they are, so no offset moves. Text strings are UTF-16BE
  with a byte-order mark (§7.9.2.2), so any title is exact.
- SVG: ``<title>`` and ``<desc>`` as the first children of the root ``<svg>`` (SVG 1.1 §5.4), which
  viewers show as the document title and tooltip.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.sax.saxutils import escape

CREATOR = "K2 routing workbench (workbench.viz)"


class PdfLayoutError(ValueError):
    """The PDF has no classic trailer to update (e.g. cross-reference streams only)."""


def _pdf_text(text: str) -> bytes:
    """A PDF text string: hex UTF-16BE with the byte-order mark."""
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode() + b">"


def set_pdf_info(path: Path, title: str, subject: str = "") -> None:
    """Give the PDF at ``path`` the document title ``title`` (and ``subject``) by an incremental update."""
    data = path.read_bytes()
    end = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    trailers = list(re.finditer(rb"trailer\s*<<(.*?)>>\s*startxref", data, re.DOTALL))
    if end is None or not trailers:
        raise PdfLayoutError("no classic trailer at the end of the PDF")
    trailer = trailers[-1].group(1)
    size = re.search(rb"/Size\s+(\d+)", trailer)
    root = re.search(rb"/Root\s+(\d+\s+\d+\s+R)", trailer)
    if size is None or root is None:
        raise PdfLayoutError("the PDF trailer has no /Size or /Root")
    info = re.search(rb"/Info\s+(\d+)\s+(\d+)\s+R", trailer)
    num, gen = (int(info.group(1)), int(info.group(2))) if info else (int(size.group(1)), 0)
    entries = b"/Title " + _pdf_text(title)
    if subject:
        entries += b"\n/Subject " + _pdf_text(subject)
    entries += b"\n/Creator " + _pdf_text(CREATOR)
    if info:  # keep what the producer recorded about itself and the file's dates
        old = re.search(rb"\b%d\s+%d\s+obj\s*<<(.*?)>>\s*endobj" % (num, gen), data, re.DOTALL)
        for key in (b"Producer", b"CreationDate", b"ModDate"):
            found = (
                re.search(rb"/" + key + rb"\s*(\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f\s]*>)", old.group(1)) if old else None
            )
            if found:
                entries += b"\n/" + key + b" " + found.group(1)
    ident = re.search(rb"/ID\s*(\[[^\]]*\])", trailer)
    body = data if data.endswith(b"\n") else data + b"\n"
    obj_at = len(body)
    obj = b"%d %d obj\n<<%s>>\nendobj\n" % (num, gen, entries)
    xref_at = obj_at + len(obj)
    # subsection 0 (the head of the free list) first, as full writers do, then the replaced object
    xref = b"xref\n0 1\n0000000000 65535 f \n%d 1\n%010d %05d n \n" % (num, obj_at, gen)
    new_trailer = b"trailer\n<</Size %d /Root %s /Info %d %d R /Prev %s%s>>\nstartxref\n%d\n%%%%EOF\n" % (
        max(int(size.group(1)), num + 1),
        root.group(1),
        num,
        gen,
        end.group(1),
        b" /ID " + ident.group(1) if ident else b"",
        xref_at,
    )
    path.write_bytes(body + obj + xref + new_trailer)


def set_svg_title(path: Path, title: str, description: str = "") -> None:
    """Insert ``<title>`` (and ``<desc>``) as the first children of the SVG's root element."""
    text = path.read_text(encoding="utf-8")
    root = re.search(r"<svg\b[^>]*>", text)
    if root is None:
        raise ValueError("no <svg> element")
    meta = f"<title>{escape(title)}</title>" + (f"<desc>{escape(description)}</desc>" if description else "")
    path.write_text(text[: root.end()] + meta + text[root.end() :], encoding="utf-8")
