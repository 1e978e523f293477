// The browser the web tests drive: Debian's Chromium through playwright-core, and why a test
// skips when either is missing (the project's test command installs both).

import { existsSync } from "node:fs";
import { missingBinaries } from "./host.mjs";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export let chromium = null;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  // said in `skipBrowser`
}

/** Why the browser tests cannot run here (the host's binaries, playwright-core, Chromium), or false. */
export const skipBrowser =
  missingBinaries() ||
  (!chromium && "playwright-core is not installed (the project's test command runs `npm ci` in web/)") ||
  (!existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM} (the project's test command installs Debian's chromium)`);
