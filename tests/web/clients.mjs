// The stock connect-node client against `satellite serve`, one row per transport and
// listener: Connect (binary and JSON, with GET for GetImage) and gRPC-Web on the --web
// listener (HTTP/1.1 plaintext, HTTP/1.1 and HTTP/2 over TLS), and gRPC, Connect and gRPC-Web
// over HTTP/2 on the main port. Each row: unary, the whole-map stream, the service's
// error codes, a deadline, a cancel mid-stream, and metadata both ways.

import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport, createGrpcTransport, createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { H, ROOT, W, cell, check, serve } from "./harness.mjs";

// The generated code the page uses, bundled for node.
const dir = mkdtempSync(join(tmpdir(), "satellite-clients-"));
await build({
  entryPoints: [join(ROOT, "web", "src", "gen", "satellite_pb.ts")],
  bundle: true, format: "esm", platform: "node", outfile: join(dir, "satellite_pb.mjs"), logLevel: "warning",
});
const { Satellite } = await import(join(dir, "satellite_pb.mjs"));

// Request metadata is checked by an authorization policy: GetImage needs x-token: abc.
const policy = join(dir, "policy.json");
writeFileSync(policy, JSON.stringify({
  name: "web-clients",
  allow_rules: [
    { name: "images", request: { paths: ["/satellite.Satellite/GetImages"] } },
    { name: "token", request: { paths: ["/satellite.Satellite/GetImage"], headers: [{ key: "x-token", values: ["abc"] }] } },
  ],
}));
const server = await serve(["--send-delay", "1", "--instance", "node", "--authz-policy", policy]);
const secure = await serve(["--send-delay", "1", "--instance", "node", "--authz-policy", policy], { tls: true });
const web = server.url;
// The TLS web listener: our CA trusted, no client certificate (browsers rarely have one).
const ca = readFileSync(join(secure.certs, "ca-cert.pem"));
const tls = { ca, servername: "localhost" };
// The main port keeps mutual TLS: a client certificate from the same CA.
const mtls = { ...tls, cert: readFileSync(join(secure.certs, "client-cert.pem")), key: readFileSync(join(secure.certs, "client-key.pem")) };
const main = `https://localhost:${secure.grpc.split(":")[1]}`;
const rows = {
  "Connect (binary, GET) / HTTP/1.1 web": createConnectTransport({ baseUrl: web, httpVersion: "1.1", useBinaryFormat: true, useHttpGet: true }),
  "Connect (JSON) / HTTP/1.1 web": createConnectTransport({ baseUrl: web, httpVersion: "1.1", useBinaryFormat: false }),
  "gRPC-Web (binary) / HTTP/1.1 web": createGrpcWebTransport({ baseUrl: web, httpVersion: "1.1", useBinaryFormat: true }),
  "gRPC / HTTP/2 main port": createGrpcTransport({ baseUrl: `http://${server.grpc}` }),
  "Connect (binary) / HTTP/2 main port": createConnectTransport({ baseUrl: `http://${server.grpc}`, httpVersion: "2", useBinaryFormat: true }),
  "Connect (JSON, GET) / HTTP/2 main port": createConnectTransport({ baseUrl: `http://${server.grpc}`, httpVersion: "2", useBinaryFormat: false, useHttpGet: true }),
  "gRPC-Web (binary) / HTTP/2 main port": createGrpcWebTransport({ baseUrl: `http://${server.grpc}`, httpVersion: "2", useBinaryFormat: true }),
  "gRPC / HTTP/2 mTLS main port": createGrpcTransport({ baseUrl: main, nodeOptions: mtls }),
  "Connect (binary) / HTTP/2 mTLS main port": createConnectTransport({ baseUrl: main, httpVersion: "2", useBinaryFormat: true, nodeOptions: mtls }),
  "gRPC-Web (binary) / HTTP/2 mTLS main port": createGrpcWebTransport({ baseUrl: main, httpVersion: "2", useBinaryFormat: true, nodeOptions: mtls }),
  "Connect (JSON) / HTTP/2 TLS web": createConnectTransport({ baseUrl: secure.url, httpVersion: "2", useBinaryFormat: false, nodeOptions: tls }),
  "Connect (binary) / HTTP/1.1 TLS web": createConnectTransport({ baseUrl: secure.url, httpVersion: "1.1", useBinaryFormat: true, nodeOptions: tls }),
  "gRPC-Web (binary) / HTTP/2 TLS web": createGrpcWebTransport({ baseUrl: secure.url, httpVersion: "2", useBinaryFormat: true, nodeOptions: tls }),
};
const name = (e) => Code[ConnectError.from(e).code];
const table = [];
try {
  for (const [row, transport] of Object.entries(rows)) {
    const c = createClient(Satellite, transport);
    const headers = { "x-token": "abc" };
    const out = [];
    // Unary, with metadata both ways.
    let instance = "";
    const img = await c.getImage({ x: 20, y: 25 }, { headers, onHeader: (h) => (instance = h.get("x-satellite-instance")) });
    check(img.x === 20 && img.img[0] === cell(20, 25), `${row}: unary`);
    check(instance === "node", `${row}: response metadata (x-satellite-instance: ${instance})`);
    try { await c.getImage({ x: 1, y: 1 }); check(false, "no token"); } catch (e) {
      check(name(e) === "PermissionDenied", `${row}: request metadata reaches the policy (no token: ${name(e)})`);
    }
    out.push("unary", "metadata");
    // The whole map, in order.
    let n = 0, ordered = true;
    for await (const i of c.getImages({ ll: { x: 0, y: 0 }, ur: { x: W - 1, y: H - 1 } })) {
      const want = { x: n % W, y: H - 1 - Math.floor(n / W) };
      if (i.x !== want.x || i.y !== want.y || i.img[0] !== cell(i.x, i.y)) ordered = false;
      n++;
    }
    check(n === W * H && ordered, `${row}: the whole map stream (${n} cells, in order)`);
    out.push("stream");
    // The service's error codes.
    const codes = [];
    try { await c.getImage({ x: W, y: 0 }, { headers }); } catch (e) { codes.push(name(e)); }
    try { for await (const _ of c.getImages({ ll: { x: 5, y: 5 }, ur: { x: 1, y: 1 } })) {} } catch (e) { codes.push(name(e)); }
    try { for await (const _ of c.getImages({ ll: { x: 0, y: 0 }, ur: { x: W, y: 1 } })) {} } catch (e) { codes.push(name(e)); }
    check(codes.join() === "OutOfRange,InvalidArgument,OutOfRange", `${row}: error codes ${codes.join(", ")}`);
    out.push("errors");
    // A deadline mid-stream.
    let got = 0, dl = "";
    try { for await (const _ of c.getImages({ ll: { x: 0, y: 0 }, ur: { x: W - 1, y: H - 1 } }, { timeoutMs: 300 })) got++; } catch (e) { dl = name(e); }
    check(dl === "DeadlineExceeded" && got > 0 && got < W * H, `${row}: deadline after ${got} cells (${dl})`);
    out.push("deadline");
    // A cancel mid-stream.
    const abort = new AbortController();
    let seen = 0, cancelled = "";
    try {
      for await (const _ of c.getImages({ ll: { x: 0, y: 0 }, ur: { x: W - 1, y: H - 1 } }, { signal: abort.signal })) {
        if (++seen === 20) abort.abort();
      }
    } catch (e) { cancelled = name(e); }
    check(cancelled === "Canceled" && seen === 20, `${row}: cancel after ${seen} cells (${cancelled})`);
    out.push("cancel");
    table.push(`| ${row} | ${out.join(", ")} |`);
  }
} finally {
  await server.stop();
  await secure.stop();
}
console.log("\n| transport / listener | passed |\n|---|---|\n" + table.join("\n"));
console.log("clients: all checks passed");
