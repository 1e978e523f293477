// The plain-text terminal screen (for results shown as text), against what programs send to a
// terminal. (The xterm.js terminals are tested in the browser: test/browser.test.js.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { Screen, resultText } from "../src/terminal.js";

function shown(...chunks) {
  const s = new Screen();
  for (const c of chunks) s.write(c);
  return s.text();
}

test("line ends, carriage returns and backspaces", () => {
  assert.equal(shown("one\r\ntwo\r\n"), "one\ntwo");
  assert.equal(shown("progress 10%\rprogress 100%\r\n"), "progress 100%");
  assert.equal(shown("ab\bc"), "ac");
  assert.equal(shown("a\tb"), "a       b");
});

test("colours are dropped, even when a sequence is cut between chunks", () => {
  assert.equal(shown("\x1b[32mgreen\x1b[0m plain"), "green plain");
  assert.equal(shown("\x1b[3", "1mred\x1b", "[0m!"), "red!");
  assert.equal(shown("\x1b]0;a title\x07shell$ "), "shell$");
  assert.equal(shown("\x1b]0;cut", " title\x1b\\after"), "after");
});

test("erasing and cursor moves redraw in place, as a spinner or a prompt does", () => {
  assert.equal(shown("working |", "\x1b[1D/", "\x1b[1D-"), "working -");
  assert.equal(shown("old line\r\x1b[2Knew"), "new");
  assert.equal(shown("keep\x1b[3Dxy\x1b[K"), "kxy");
  // Ink-style redraw: up two lines, erase each, write the new frame.
  assert.equal(
    shown("> prompt\r\nstatus: 1\r\nfooter\r\n", "\x1b[2A\x1b[2Kstatus: 2\r\n\x1b[2Kfooter 2\r\n"),
    "> prompt\nstatus: 2\nfooter 2",
  );
  assert.equal(shown("abc\x1b[1;2Hx"), "axc");
  assert.equal(shown("a\x1b7bc\x1b8Z"), "aZc");
});

test("a cleared or alternate screen starts a fresh page below what was shown", () => {
  assert.equal(shown("before\r\n\x1b[2J\x1b[Hafter"), "before\n\nafter");
  assert.equal(shown("shell$ vim\r\n\x1b[?1049hEDITOR\x1b[?1049l\r\nshell$ "), "shell$ vim\n\nEDITOR\n\nshell$");
});

test("garbage cannot grow the pending buffer, and old lines go first", () => {
  const s = new Screen(3);
  s.write(`\x1b[${"1".repeat(10000)}`);
  assert.ok(s.pending.length <= 256);
  const t = new Screen(3);
  t.write("1\r\n2\r\n3\r\n4\r\n5");
  assert.equal(t.text(), "3\n4\n5");
});

test("a command's output read as text: a pipe's line feeds end lines, cut anywhere", () => {
  const bytes = (text) => new TextEncoder().encode(text);
  assert.equal(resultText([bytes("total 8\n-rw-r--r-- a\n-rw-r--r-- b\n")]), "total 8\n-rw-r--r-- a\n-rw-r--r-- b");
  assert.equal(resultText([bytes("one\r\ntwo\n")]), "one\ntwo");
  const wide = bytes("日本\n\x1b[32mok\x1b[0m\n");
  assert.equal(resultText([wide.subarray(0, 2), wide.subarray(2, 9), wide.subarray(9)]), "日本\nok");
});
