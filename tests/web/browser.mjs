// The map page in headless Chromium (Debian's, driven by playwright-core): the whole map drawn
// and every cell checked against the map file, a click on a cell and one off the map, a
// deadline, and a cancel whose handler the server then reports as CANCELLED; a screenshot.

import { chromium } from "playwright-core";
import { join } from "node:path";
import { H, ROOT, W, cell, check, serve } from "./harness.mjs";

const CELL = 10, MARGIN = 2;
const SEA = [0x1f, 0x4e, 0x79], LAND = [0x3c, 0x8d, 0x2f];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const fast = await serve();
const secure = await serve([], { tls: true });
const slow = await serve(["--send-delay", "20"]);
// The TLS listener's certificate is from the test's own CA: Chromium is told to accept it.
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 520 } });
try {
  const runs = [
    ["connect-json", fast, "http/1.1"], ["connect-proto", fast, "http/1.1"], ["grpc-web", fast, "http/1.1"],
    ["connect-json", secure, "h2"], ["grpc-web", secure, "h2"],
  ];
  for (const [protocol, server, wire] of runs) {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    await page.goto(`${server.url}/`);
    const hop = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
    check(hop === wire, `${protocol}: the page came over ${hop}`);
    await page.waitForFunction(() => window.satellite?.streams >= 1, null, { timeout: 30_000 });
    if (protocol !== "connect-json") {
      await page.selectOption("#protocol", protocol);
      await page.click("#redraw");
      await page.waitForFunction(() => window.satellite?.streams >= 2, null, { timeout: 30_000 });
    }
    // Every cell, as drawn: the colour at its centre.
    const pixels = await page.evaluate(({ W, H, CELL, MARGIN }) => {
      const c = document.getElementById("map").getContext("2d");
      const out = [];
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const d = c.getImageData((x + MARGIN) * CELL + 5, (H - 1 - y + MARGIN) * CELL + 5, 1, 1).data;
          out.push([d[0], d[1], d[2]]);
        }
      return out;
    }, { W, H, CELL, MARGIN });
    let wrong = 0;
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const want = cell(x, y) === 0x20 ? SEA : LAND;
        const got = pixels[y * W + x];
        if (got.some((v, i) => Math.abs(v - want[i]) > 2)) wrong++;
      }
    check(wrong === 0, `${protocol} over ${wire}: all ${W * H} cells drawn as the map says (${wrong} wrong)`);

    // A click on a cell: GetImage.
    const box = await page.locator("#map").boundingBox();
    const at = (x, y) => [box.x + ((x + MARGIN) * CELL + 5) * (box.width / ((W + 2 * MARGIN) * CELL)),
      box.y + ((H - 1 - y + MARGIN) * CELL + 5) * (box.height / ((H + 2 * MARGIN) * CELL))];
    const [cx, cy] = at(20, 25);
    const sent = page.waitForRequest((r) => r.url().includes("/satellite.Satellite/GetImage") && !r.url().includes("GetImages"));
    await page.mouse.click(cx, cy);
    const how = (await sent).method();
    // GetImage is marked side-effect free, so the Connect transports call it with GET.
    check(how === (protocol === "grpc-web" ? "POST" : "GET"), `${protocol}: GetImage went as ${how}`);
    const want = JSON.stringify(String.fromCharCode(cell(20, 25)));
    await page.waitForFunction((w) => document.getElementById("result").textContent.endsWith(w), want);
    check(true, `${protocol}: click (20, 25) shows GetImage = ${want}`);
    const [ox, oy] = at(-1, -1);
    await page.mouse.click(ox, oy);
    await page.waitForFunction(() => window.satellite.lastCode === "OUT_OF_RANGE");
    check(true, `${protocol}: an off-map click shows OUT_OF_RANGE`);
    // A drag streams that area: the page clears nothing, so count the stream and its cells.
    const before = await page.evaluate(() => window.satellite.streams);
    const [ax, ay] = at(10, 5), [bx, by] = at(14, 8);
    await page.mouse.move(ax, ay);
    await page.mouse.down();
    await page.mouse.move(bx, by);
    await page.mouse.up();
    await page.waitForFunction((n) => window.satellite.streams > n, before);
    const last = await page.evaluate(() => window.satellite.lastMessage);
    check(last === "20 cells", `${protocol}: a drag from (10, 5) to (14, 8) streams that area (${last})`);
    if (protocol === "connect-json" && wire === "http/1.1") {
      await page.screenshot({ path: join(ROOT, "web", "screenshot.png") });
    }
    await page.close();
  }

  // The slow server: a deadline, then a cancel.
  const page = await context.newPage();
  await page.goto(`${slow.url}/`);
  await page.waitForFunction(() => Object.keys(window.satellite?.cells ?? {}).length > 10);
  await page.click("#cancel");
  await page.waitForFunction(() => window.satellite.lastCode === "CANCELED");
  const drawn = await page.evaluate(() => Object.keys(window.satellite.cells).length);
  check(drawn < W * H, `cancel stops the stream mid-way (${drawn} of ${W * H} cells)`);
  const cancelled = 'grpc_server_call_duration_seconds_count{grpc_method="satellite.Satellite/GetImages",grpc_status="CANCELLED"}';
  let seen = 0;
  for (let i = 0; i < 100 && seen < 1; i++) {
    seen = await slow.metric(cancelled);
    await new Promise((r) => setTimeout(r, 50));
  }
  check(seen >= 1, "the server dropped the cancelled call's handler (a CANCELLED call in its metrics)");
  await page.fill("#deadline", "300");
  await page.click("#redraw");
  await page.waitForFunction(() => window.satellite.lastCode === "DEADLINE_EXCEEDED", null, { timeout: 10_000 });
  check(true, "a 300 ms deadline shows DEADLINE_EXCEEDED");
  await page.close();
} finally {
  await browser.close();
  await fast.stop();
  await secure.stop();
  await slow.stop();
}
console.log("browser: all checks passed");
