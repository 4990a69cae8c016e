// A real reformer-server for the harness (port 0 on loopback; the ports come from its first stdout line) and a
// minimal HTTP/1.1 client that returns the exact status, headers and body bytes.
import { spawn } from "node:child_process";
import http from "node:http";
import readline from "node:readline";

export function httpRequest({ port, method, path, headers = {}, body = null, timeoutMs = 30000 }) {
  return new Promise((resolve, reject) => {
    const data = body === null ? null : Buffer.isBuffer(body) ? body : Buffer.from(body);
    const h = { ...headers };
    if (data !== null && h["Content-Length"] === undefined) h["Content-Length"] = data.length;
    const req = http.request({ host: "127.0.0.1", port, method, path, headers: h, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    if (data !== null) req.write(data);
    req.end();
  });
}

export class ServerProcess {
  // Starts reformer-server and resolves once it printed its ports (not yet ready; see waitReady).
  static start(binary, args, { startTimeoutMs = 60000 } = {}) {
    const proc = spawn(binary, ["--grpc_port", "0", "--http_port", "0", "--bind_address", "127.0.0.1", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const stderr = [];
    proc.stderr.on("data", (c) => stderr.push(c));
    const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
    const lines = readline.createInterface({ input: proc.stdout });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { proc.kill("SIGKILL"); reject(new Error("server printed no ports in time")); },
        startTimeoutMs);
      lines.once("line", (line) => {
        clearTimeout(timer);
        const ports = Object.fromEntries([...line.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1], m[2]]));
        if (!ports.http_port) {
          proc.kill("SIGKILL");
          reject(new Error(`unexpected first line from the server: ${line}`));
          return;
        }
        resolve(new ServerProcess(proc, Number(ports.http_port), Number(ports.grpc_port), exited, stderr));
      });
      exited.then(({ code }) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code}) before printing its ports: ${Buffer.concat(stderr)}`));
      });
    });
  }

  constructor(proc, httpPort, grpcPort, exited, stderr) {
    Object.assign(this, { proc, httpPort, grpcPort, exited, stderr });
  }

  async waitReady(timeoutMs = 120000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await httpRequest({ port: this.httpPort, method: "GET", path: "/v2/health/ready" }).catch(() => null);
      if (r?.status === 200) return;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error("server not ready in time");
  }

  // SIGTERM starts the drain; the caller may still talk to the server while it drains (--drain_min_s).
  sigterm() { this.proc.kill("SIGTERM"); }

  // Exit status after SIGTERM (sent here if not yet); SIGKILL after the timeout.
  async stop(timeoutMs = 60000) {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }
}
