# Makes the example projects' icons and link-preview image from pixel art
# (favicon.svg, icon-32/180/192/512.png, preview.png at 1200x630), scaled by
# whole pixels and written with zlib alone (no imaging library needed):
#
#   python3 scripts/example-icons.py gallery crates/cli/projects/gallery/static
import struct, zlib, sys

def png(path, w, h, pixel):
    raw = bytearray()
    for y in range(h):
        raw.append(0)
        for x in range(w):
            raw.extend(pixel(x, y))
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

def hexrgb(s, a=255):
    return bytes([int(s[1:3], 16), int(s[3:5], 16), int(s[5:7], 16), a])

ART = {
  "gallery": ("#1d3557", {"y": "#f1c453", "b": "#1d3557"}, [
    "................",
    "................",
    "................",
    ".....yyyyyy.....",
    ".....yyyyyy.....",
    "...yyyyyyyyyy...",
    "...yyybyybyyy...",
    "...yyybyybyyy...",
    "...yyyyyyyyyy...",
    "...yyyyyyyyyy...",
    "...yyybbbbyyy...",
    ".....yyyyyy.....",
    ".....yyyyyy.....",
    "................",
    "................",
    "................"]),
  "microsites": ("#2a6f4e", {"c": "#f4efe6"}, [
    "................",
    "................",
    "......cccc......",
    ".....cccccc.....",
    ".....cccccc.....",
    ".....cccccc.....",
    ".....cccccc.....",
    "......cccc......",
    "................",
    "....cccccccc....",
    "...cccccccccc...",
    "..cccccccccccc..",
    "..cccccccccccc..",
    "..cccccccccccc..",
    "................",
    "................"]),
}

def icon(name, size, out):
    bg, colours, rows = ART[name]
    scale = size // 16
    def pixel(x, y):
        ch = rows[y // scale][x // scale] if x // scale < 16 and y // scale < 16 else "."
        return hexrgb(colours[ch]) if ch in colours else hexrgb(bg)
    png(out, size, size, pixel)

def preview(name, out):
    # 1200x630: the icon's art at 20 px a dot, centred on the background.
    bg, colours, rows = ART[name]
    scale, w, h = 20, 1200, 630
    x0, y0 = (w - 16 * scale) // 2, (h - 16 * scale) // 2
    def pixel(x, y):
        gx, gy = (x - x0) // scale, (y - y0) // scale
        if 0 <= gx < 16 and 0 <= gy < 16 and x >= x0 and y >= y0:
            ch = rows[gy][gx]
            if ch in colours:
                return hexrgb(colours[ch])
        return hexrgb(bg)
    png(out, w, h, pixel)

def svg(name, out):
    bg, colours, rows = ART[name]
    rects = "".join(
        f'<rect x="{x}" y="{y}" width="1" height="1" fill="{colours[ch]}"/>'
        for y, row in enumerate(rows) for x, ch in enumerate(row) if ch in colours)
    open(out, "w").write(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16" shape-rendering="crispEdges">'
        f'<rect width="16" height="16" rx="3" fill="{bg}"/>{rects}</svg>\n')

name, dest = sys.argv[1], sys.argv[2]
svg(name, f"{dest}/favicon.svg")
for size in (32, 180, 192, 512):
    icon(name, size, f"{dest}/icon-{size}.png")
preview(name, f"{dest}/preview.png")
