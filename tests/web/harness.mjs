// Shared by the browser and client tests: start `satellite serve` with a --web listener on a
// free loopback port, and stop it.

import { execFileSync, spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.SATELLITE_BIN ?? join(ROOT, "target", "release", "satellite");

/** The map file the binary embeds, as rows of bytes (y = 0 is the last row). */
export const WORLD = readFileSync(join(ROOT, "src", "satellite", "world.txt"), "latin1")
  .split("\n")
  .filter((l) => l.length > 0);
export const W = WORLD[0].length;
export const H = WORLD.length;
export const cell = (x, y) => WORLD[H - 1 - y].charCodeAt(x);

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * `satellite serve --plaintext --web 127.0.0.1:PORT --web-plaintext --admin-addr ...`, or with
 * `tls` set, mutual TLS on the main port and TLS on the web listener (HTTP/1.1 and HTTP/2 by
 * ALPN) with a fresh `satellite certs` PKI.
 */
export async function serve(extra = [], { tls = false } = {}) {
  const [grpc, web, admin] = [await freePort(), await freePort(), await freePort()];
  let security = ["--plaintext", "--web-plaintext"];
  let certs = null;
  if (tls) {
    certs = mkdtempSync(join(tmpdir(), "satellite-web-certs-"));
    execFileSync(BIN, ["certs", "--out", certs, "--force"], { stdio: "ignore" });
    security = ["--certs", certs];
  }
  const args = ["serve", "--addr", `127.0.0.1:${grpc}`, "--web", `127.0.0.1:${web}`,
    "--admin-addr", `127.0.0.1:${admin}`, ...security, ...extra];
  const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  let log = "";
  child.stderr.on("data", (d) => (log += d));
  const url = `${tls ? "https" : "http"}://localhost:${web}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (await listening(web)) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    certs,
    grpc: `127.0.0.1:${grpc}`,
    log: () => log,
    /** One sample of the server's metrics (`name{labels}` exactly as Prometheus prints it). */
    async metric(series) {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(series + " "));
      return line ? Number(line.slice(series.length + 1)) : 0;
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

function listening(port) {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

export function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}
