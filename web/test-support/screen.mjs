// What every screen of the page must be, checked in a real browser: no wider than a phone, and
// readable (axe-core's contrast and naming rules) in the light and the dark theme.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const AXE = new URL("../node_modules/axe-core/axe.min.js", import.meta.url);
// What axe-core checks here: contrast, and that every control has a name people can read.
const AXE_RULES = [
  "color-contrast",
  "label",
  "label-title-only",
  "form-field-multiple-labels",
  "button-name",
  "input-button-name",
  "select-name",
  "summary-name",
  "aria-input-field-name",
  "aria-toggle-field-name",
];

/**
 * Checks the screen the page shows now: nothing wider than a 320, 390 or 430 px phone, and
 * axe-core (served to the page from its own origin, so the page's CSP stays as it is) finds no
 * contrast or naming problems in the light or the dark theme.
 */
export async function checkScreen(page, what) {
  const origin = new URL(page.url()).origin;
  await page.route(`${origin}/axe.min.js`, (route) => route.fulfill({ body: readFileSync(AXE), contentType: "text/javascript" }));
  try {
    for (const width of [320, 390, 430]) {
      await page.setViewportSize({ width, height: 800 });
      // Terminals fit their columns when their size is observed to change.
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      const [wide, screen] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
      assert.ok(wide <= screen, `${what} at ${width} px is ${wide} px wide`);
    }
    if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.addScriptTag({ url: `${origin}/axe.min.js` });
    for (const colorScheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme });
      const found = await page.evaluate((rules) => window.axe.run(document, { runOnly: { type: "rule", values: rules } }), AXE_RULES);
      const problems = found.violations.map((v) => `${v.id}: ${v.nodes.map((n) => `${n.target.join(" ")} (${n.failureSummary})`).join("; ")}`);
      assert.deepEqual(problems, [], `${what}, ${colorScheme} theme`);
    }
  } finally {
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.unroute(`${origin}/axe.min.js`);
  }
}
