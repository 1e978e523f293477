// Terminals for what the host's programs print. `TermView` shows a session's output or a
// command's result with xterm.js (vendored from npm, `vendor/xterm.mjs`): colours, carriage
// returns, cursor moves, wide characters, as the host's terminal showed them. `Screen` reads the
// same bytes as plain text, for a result whose terminal was retired (the page keeps a bounded
// number of live terminals) and for the page's tests.
//
// The terminals only display: input to a session goes through the page's form, so that each
// line is a signed request the host judges; nothing typed in a terminal reaches the host.

import { Terminal } from "./vendor/xterm.mjs";

const FONT = 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';
// xterm.js's vertical scrollbar lies over the right edge of its screen.
const SCROLLBAR = 14;
const SESSION_ROWS = 16;
const RESULT_ROWS = 24;
// A session drawn for the host's terminal: its type no smaller than this (then it scrolls
// sideways; a tall one scrolls within its box, `.term.host` in the style).
const MIN_FONT = 8;

// Both palettes keep every colour at 4.5:1 or more against their background (xterm.js also
// lifts any colour a program picks to that ratio: `minimumContrastRatio`).
const LIGHT = {
  background: "#ffffff",
  foreground: "#1b1f24",
  cursor: "#1b1f24",
  cursorAccent: "#ffffff",
  selectionBackground: "#b6d4fe",
  black: "#1b1f24",
  red: "#a40e26",
  green: "#116329",
  yellow: "#6f4a00",
  blue: "#0550ae",
  magenta: "#8250df",
  cyan: "#1b6778",
  white: "#57606a",
  brightBlack: "#57606a",
  brightRed: "#a40e26",
  brightGreen: "#116329",
  brightYellow: "#6f4a00",
  brightBlue: "#0550ae",
  brightMagenta: "#8250df",
  brightCyan: "#1b6778",
  brightWhite: "#1b1f24",
};
const DARK = {
  background: "#0d1117",
  foreground: "#e6edf3",
  cursor: "#e6edf3",
  cursorAccent: "#0d1117",
  selectionBackground: "#264f78",
  black: "#9198a1",
  red: "#ff7b72",
  green: "#3fb950",
  yellow: "#d29922",
  blue: "#58a6ff",
  magenta: "#bc8cff",
  cyan: "#39c5cf",
  white: "#b1bac4",
  brightBlack: "#9198a1",
  brightRed: "#ffa198",
  brightGreen: "#56d364",
  brightYellow: "#e3b341",
  brightBlue: "#79c0ff",
  brightMagenta: "#d2a8ff",
  brightCyan: "#56d4dd",
  brightWhite: "#ffffff",
};

const darkScheme = globalThis.matchMedia?.("(prefers-color-scheme: dark)");
const theme = () => (darkScheme?.matches ? DARK : LIGHT);
const views = new Set();
darkScheme?.addEventListener("change", () => {
  for (const view of views) view.term.options.theme = theme();
});
const resized = typeof ResizeObserver === "function" ? new ResizeObserver((entries) => entries.forEach((e) => e.target.view?.fit())) : null;

const cellWidths = new Map();

/** The width of one character cell of `size` px in the terminals' font (measured once). */
function cellWidth(size) {
  if (!cellWidths.has(size)) cellWidths.set(size, measureCell(size));
  return cellWidths.get(size);
}

function measureCell(size) {
  const probe = document.createElement("span");
  probe.style.cssText = `position:absolute;visibility:hidden;white-space:pre;font-kerning:none;font-family:${FONT};font-size:${size}px`;
  probe.textContent = "W".repeat(32);
  document.body.append(probe);
  const width = probe.getBoundingClientRect().width / 32;
  probe.remove();
  return width || size * 0.6;
}

/**
 * One terminal, display only. `kind` "session": a PTY's output (its line ends are already
 * CR LF), a fixed height, a long scrollback. `kind` "result": a command's output, whose bare
 * line feeds (a pipe's) end lines; as tall as its lines, up to a limit. Its columns follow the
 * width of its element, so a phone never scrolls sideways; a line longer than that wraps. A
 * session whose terminal size the host reports ([`TermView.hostSize`]) is drawn with exactly
 * that many columns and rows instead, as the program drew it: in smaller type on a narrow
 * screen, and, below a legible size, scrolling sideways within its own box (never the page).
 */
export class TermView {
  constructor(kind, label) {
    this.kind = kind;
    this.element = document.createElement("div");
    this.element.className = `term ${kind}`;
    this.element.setAttribute("role", "group");
    this.element.setAttribute("aria-label", label);
    this.screen = document.createElement("div");
    this.element.append(this.screen);
    this.element.view = this;
    this.size = globalThis.innerWidth < 400 ? 12 : 13;
    this.term = new Terminal({
      cols: 80,
      rows: kind === "session" ? SESSION_ROWS : 1,
      convertEol: kind === "result",
      disableStdin: true,
      scrollback: kind === "session" ? 5000 : 2000,
      fontFamily: FONT,
      fontSize: this.size,
      theme: theme(),
      minimumContrastRatio: 4.5,
      cursorInactiveStyle: "none",
      // No program here hears of this terminal's size (a shell would redraw its own line): the
      // cursor's line is rewrapped with the others.
      reflowCursorLine: true,
    });
    // For the page's tests: the buffer, as xterm.js holds it.
    this.element.terminal = this.term;
    this.data = kind === "result" ? [] : null;
    views.add(this);
  }

  /** Shows the terminal; its element must be in the document by now. */
  open() {
    if (this.opened || !this.element.isConnected) return;
    this.opened = true;
    this.term.open(this.screen);
    this.fit();
    resized?.observe(this.element);
  }

  /** Writes bytes (a Uint8Array) as the program sent them. */
  write(bytes) {
    this.data?.push(bytes);
    this.term.write(bytes, () => this.fit());
  }

  /** A command's whole output: its last line end dropped, so that no empty row follows it. */
  result(bytes) {
    let end = bytes.length;
    if (bytes[end - 1] === 0x0a) end -= bytes[end - 2] === 0x0d ? 2 : 1;
    this.write(bytes.subarray(0, end));
    // Nothing will be typed here: no cursor.
    this.term.write("\x1b[?25l");
  }

  /** The size of the program's terminal at the host (`{ cols, rows }`), or null if unknown. */
  hostSize(size) {
    this.host = size?.cols > 0 && size?.rows > 0 ? size : null;
    this.fit();
  }

  /** Fits the columns to the element's width, and a result's rows to its lines. */
  fit() {
    if (!this.opened) return;
    const width = this.element.clientWidth - 8;
    if (width <= 0) return;
    this.cell ??= cellWidth(this.size);
    if (this.host) {
      const { cols, rows } = this.host;
      const font = Math.max(MIN_FONT, Math.min(this.size, Math.floor(((width - SCROLLBAR) / cols) * (this.size / this.cell))));
      if (font !== this.term.options.fontSize) this.term.options.fontSize = font;
      if (cols !== this.term.cols || rows !== this.term.rows) this.term.resize(cols, rows);
      this.element.classList.toggle("wide", cellWidth(font) * cols + SCROLLBAR > width);
      this.element.classList.add("host");
      return;
    }
    if (this.term.options.fontSize !== this.size) this.term.options.fontSize = this.size;
    this.element.classList.remove("wide", "host");
    const cols = Math.max(20, Math.floor((width - SCROLLBAR) / this.cell));
    if (cols !== this.term.cols) this.term.resize(cols, this.term.rows);
    if (this.kind !== "result") return;
    // As many rows as its lines take at this width (the cursor's line the last), up to a limit.
    const b = this.term.buffer.active;
    let used = b.length;
    while (used > b.baseY + b.cursorY + 1 && !b.getLine(used - 1)?.translateToString(true)) used--;
    const rows = Math.min(RESULT_ROWS, Math.max(1, used));
    if (rows !== this.term.rows) this.term.resize(cols, rows);
  }

  /** A result's output as plain text (see `resultText`). */
  text() {
    return resultText(this.data ?? []);
  }

  dispose() {
    resized?.unobserve(this.element);
    views.delete(this);
    this.term.dispose();
  }
}

/**
 * A command's output (byte chunks) as plain text: its line feeds end lines, as they do in
 * `TermView`'s results; what a terminal does with carriage returns and escapes is done too.
 */
export function resultText(chunks) {
  const screen = new Screen();
  const decoder = new TextDecoder();
  for (const bytes of chunks) screen.write(decoder.decode(bytes, { stream: true }).replace(/\r?\n/g, "\r\n"));
  return screen.text();
}

const ESC = "\x1b";

/**
 * A terminal screen as plain text: carriage returns, backspaces, tabs, cursor moves, erasing,
 * cleared and alternate screens, so that progress bars and redrawn prompts read as they were
 * left; colours and other attributes dropped; lines as long as the program made them.
 */
export class Screen {
  /** Keeps at most `maxLines` lines (the oldest go first). */
  constructor(maxLines = 2000) {
    this.maxLines = maxLines;
    this.lines = [[]];
    this.row = 0;
    this.col = 0;
    this.saved = { row: 0, col: 0 };
    this.origin = 0; // the first line of the current page (after a clear)
    this.pending = ""; // an escape sequence cut by the end of a chunk
  }

  /** The first row a full-screen program addresses: the page's first line, or 24 lines up. */
  get top() {
    return Math.max(this.origin, this.lines.length - 24);
  }

  /** Starts a fresh page below what was shown, which stays above as scrollback. */
  page() {
    this.down(this.lines.length - this.row);
    this.col = 0;
    this.origin = this.row;
  }

  /** Feeds text (already decoded). */
  write(text) {
    const input = this.pending + text;
    this.pending = "";
    let i = 0;
    while (i < input.length) {
      const c = input[i];
      if (c === ESC) {
        const end = sequenceEnd(input, i);
        if (end < 0) {
          // Incomplete: wait for the rest (bounded, so garbage cannot grow it forever).
          this.pending = input.slice(i, i + 256);
          return;
        }
        this.escape(input.slice(i, end));
        i = end;
        continue;
      }
      if (c === "\r") this.col = 0;
      else if (c === "\n") this.down(1);
      else if (c === "\b") this.col = Math.max(0, this.col - 1);
      else if (c === "\t") this.col = (Math.floor(this.col / 8) + 1) * 8;
      else if (c >= " " || c > "\x7f") this.put(c);
      i += 1;
    }
  }

  put(c) {
    const line = this.lines[this.row];
    while (line.length < this.col) line.push(" ");
    line[this.col] = c;
    this.col += 1;
  }

  down(n) {
    this.row += n;
    while (this.lines.length <= this.row) this.lines.push([]);
    const over = this.lines.length - this.maxLines;
    if (over > 0) {
      this.lines.splice(0, over);
      this.row -= over;
      this.origin = Math.max(0, this.origin - over);
    }
  }

  escape(seq) {
    if (seq[1] === "[") return this.csi(seq.slice(2, -1), seq.at(-1));
    if (seq[1] === "7") this.saved = { row: this.row, col: this.col };
    else if (seq[1] === "8") ({ row: this.row, col: this.col } = this.saved);
    else if (seq[1] === "M") this.row = Math.max(this.top, this.row - 1);
    // OSC (titles), charset selections and the rest change nothing shown.
  }

  csi(params, final) {
    const priv = params.startsWith("?");
    const nums = (priv ? params.slice(1) : params).split(";").map((n) => Number.parseInt(n, 10));
    const n = (i, d = 1) => (Number.isFinite(nums[i]) && nums[i] > 0 ? nums[i] : d);
    const line = this.lines[this.row];
    switch (final) {
      case "A":
        this.row = Math.max(this.top, this.row - n(0));
        break;
      case "B":
        this.down(n(0));
        break;
      case "C":
        this.col += n(0);
        break;
      case "D":
        this.col = Math.max(0, this.col - n(0));
        break;
      case "E":
        this.down(n(0));
        this.col = 0;
        break;
      case "F":
        this.row = Math.max(this.top, this.row - n(0));
        this.col = 0;
        break;
      case "G":
        this.col = n(0) - 1;
        break;
      case "H":
      case "f": {
        const top = this.top;
        this.row = top;
        this.down(n(0) - 1);
        this.col = n(1) - 1;
        break;
      }
      case "K": {
        const mode = Number.isFinite(nums[0]) ? nums[0] : 0;
        if (mode === 0) line.length = Math.min(line.length, this.col);
        else if (mode === 1) for (let i = 0; i <= this.col && i < line.length; i++) line[i] = " ";
        else line.length = 0;
        break;
      }
      case "J": {
        const mode = Number.isFinite(nums[0]) ? nums[0] : 0;
        if (mode === 0) {
          line.length = Math.min(line.length, this.col);
          this.lines.length = this.row + 1;
        } else if (mode >= 2) {
          this.page();
        }
        break;
      }
      case "s":
        this.saved = { row: this.row, col: this.col };
        break;
      case "u":
        ({ row: this.row, col: this.col } = this.saved);
        break;
      case "h":
      case "l":
        // Entering or leaving the alternate screen starts a fresh page below.
        if (priv && [47, 1047, 1049].includes(nums[0])) this.page();
        break;
      default:
      // Colours (m) and every other setting: nothing to show.
    }
    this.row = Math.min(Math.max(this.row, 0), this.lines.length - 1);
  }

  /** The screen as text, trailing blanks of each line dropped. */
  text() {
    return this.lines.map((l) => l.join("").trimEnd()).join("\n").replace(/\n+$/, "");
  }
}

/** Where the escape sequence starting at `i` ends (exclusive), or -1 if it is not complete. */
function sequenceEnd(s, i) {
  if (i + 1 >= s.length) return -1;
  const kind = s[i + 1];
  if (kind === "[") {
    for (let j = i + 2; j < s.length; j++) {
      const code = s.charCodeAt(j);
      if (code >= 0x40 && code <= 0x7e) return j + 1;
      if (code < 0x20 || code > 0x7e) return j; // malformed: drop what came before
    }
    return -1;
  }
  if (kind === "]" || kind === "P" || kind === "_" || kind === "^") {
    // A string, ended by BEL or ESC \.
    for (let j = i + 2; j < s.length; j++) {
      if (s[j] === "\x07") return j + 1;
      if (s[j] === ESC && s[j + 1] === "\\") return j + 2;
      if (s[j] === ESC && j + 1 >= s.length) return -1;
    }
    return -1;
  }
  if (kind === "(" || kind === ")" || kind === "#") return i + 3 <= s.length ? i + 3 : -1;
  return i + 2;
}
