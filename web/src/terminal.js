// A small terminal screen for a session's output: enough of what programs send to a terminal
// (carriage returns, backspaces, tabs, cursor moves, erasing, the alternate screen) that
// progress bars, spinners and redrawn prompts read as they did on the host, shown as text.
// Colours and other attributes are dropped. Lines are as long as the program makes them (the
// page wraps them): the host's terminal width is not known here.

const ESC = "\x1b";

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
