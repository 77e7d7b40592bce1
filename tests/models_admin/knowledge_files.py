"""Documents for the knowledge tests: a real PDF built by hand (text in
Helvetica, one page per string), and a small shop corpus."""

from __future__ import annotations


def pdf_bytes(pages: list[str], *, title: str = "") -> bytes:
    """A PDF whose pages show ``pages`` (one line each), with ``title`` in
    its metadata."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for index, text in enumerate(pages):
        content = 4 + 2 * index
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = len(objects) + 1
    objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info} 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


SHOP_DOCS = {
    "returns.md": b"""# Returns

## Return window

Unused items can be returned within 30 days of delivery.

## Refund timing

Refunds reach your card within 5 working days of the parcel arriving.
""",
    "shipping.md": b"""# Shipping

## Costs

Standard shipping costs 3.95 pounds; orders over 60 pounds ship free.

## Countries

We ship to the UK, the EU, Norway and Switzerland. Parcels to Canada take two weeks.
""",
    "candles.html": b"""<!doctype html><html><head><title>Candle care</title>
<style>body { color: red }</style></head><body>
<nav>Home | Shop | Help</nav>
<main><h1>Candle care</h1><p>Trim the wick to 5 mm before lighting.</p>
<h2>Burn time</h2><p>The large soy candle burns for about 45 hours.</p></main>
<footer>Copyright the shop</footer></body></html>""",
}
