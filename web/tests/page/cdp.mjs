// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4, messages
// separated by NUL bytes), so the page tests need nothing from npm: only node and Debian's
// chromium. Also a tiny static file server for the page.

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";

export const CHROMIUM = process.env.SPARSETT_CHROMIUM || "/usr/lib/chromium/chromium";

/** Starts headless Chromium; `webgpu` false leaves WebGPU off (Chromium's default on Linux
 *  without a GPU), `extraArgs` adds flags. Returns a `Browser`. */
export async function launch({ webgpu = true, extraArgs = [] } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "sparsett-chromium-"));
  const args = [
    "--headless",
    "--remote-debugging-pipe",
    `--user-data-dir=${profile}`,
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Frames from a playing video must keep flowing while the tracker is busy.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1000,900",
    ...(webgpu ? ["--enable-unsafe-webgpu"] : []),
    ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
    ...extraArgs,
    "about:blank",
  ];
  const proc = spawn(CHROMIUM, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const browser = new Browser(proc, profile, () => stderr);
  await browser.send("Target.setDiscoverTargets", { discover: false });
  return browser;
}

export class Browser {
  constructor(proc, profile, stderr) {
    this.proc = proc;
    this.profile = profile;
    this.stderr = stderr;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    this.out = proc.stdio[3];
    let buf = Buffer.alloc(0);
    proc.stdio[4].on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let end;
      while ((end = buf.indexOf(0)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, end).toString("utf8"));
        buf = buf.subarray(end + 1);
        this.dispatch(msg);
      }
    });
    this.exited = new Promise((ok) => proc.on("exit", ok));
    proc.on("exit", (code) => {
      for (const { fail } of this.pending.values()) {
        fail(new Error(`chromium exited (${code}) during a DevTools call:\n${this.stderr()}`));
      }
      this.pending.clear();
    });
  }

  dispatch(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (!p) return;
      if (msg.error) p.fail(new Error(`${p.method}: ${msg.error.message} ${msg.error.data || ""}`));
      else p.ok(msg.result);
    } else {
      for (const l of this.listeners) l(msg);
    }
  }

  /** One DevTools command; `sessionId` addresses a page. */
  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    const msg = { id, method, params, ...(sessionId ? { sessionId } : {}) };
    return new Promise((ok, fail) => {
      this.pending.set(id, { ok, fail, method });
      this.out.write(JSON.stringify(msg) + "\0");
    });
  }

  /** A new tab, attached with a flat session. */
  async newPage() {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.send("Runtime.enable");
    await page.send("Page.enable");
    return page;
  }

  async close() {
    try {
      await Promise.race([this.send("Browser.close"), new Promise((ok) => setTimeout(ok, 3000))]);
    } catch {
      // already gone
    }
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    await this.exited;
    // Chromium's helper processes can outlive the browser process and keep writing to the
    // profile for a while; a temporary profile left behind must not fail a test, so removing it
    // is best effort (retried for up to 5 s).
    for (let i = 0; i < 20; i++) {
      try {
        rmSync(this.profile, { recursive: true, force: true });
        return;
      } catch {
        await new Promise((ok) => setTimeout(ok, 250));
      }
    }
    console.error(`note: could not remove the temporary profile ${this.profile}`);
  }
}

export class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
    this.console = []; // console messages and uncaught exceptions, for failure reports
    browser.listeners.push((msg) => {
      if (msg.sessionId !== sessionId) return;
      if (msg.method === "Runtime.consoleAPICalled") {
        const text = msg.params.args.map((a) => a.value ?? a.description ?? "").join(" ");
        this.console.push(`console.${msg.params.type}: ${text}`);
      } else if (msg.method === "Runtime.exceptionThrown") {
        const d = msg.params.exceptionDetails;
        this.console.push(`uncaught: ${d.exception?.description || d.text}`);
      }
    });
  }

  send(method, params = {}) {
    return this.browser.send(method, params, this.sessionId);
  }

  async goto(url) {
    const loaded = new Promise((ok) => {
      const l = (msg) => {
        if (msg.sessionId === this.sessionId && msg.method === "Page.loadEventFired") {
          this.browser.listeners.splice(this.browser.listeners.indexOf(l), 1);
          ok();
        }
      };
      this.browser.listeners.push(l);
    });
    const r = await this.send("Page.navigate", { url });
    if (r.errorText) throw new Error(`navigating to ${url}: ${r.errorText}`);
    await loaded;
  }

  /** Evaluates an expression (awaiting a promise) and returns its JSON value. */
  async eval(expression) {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
      userGesture: true,
    });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`in the page: ${d.exception?.description || d.text}`);
    }
    return r.result.value;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor(expression, { timeoutMs = 60000, what = expression, intervalMs = 100 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval(expression);
      if (v) return v;
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}\n${this.report()}`);
      }
      await new Promise((ok) => setTimeout(ok, intervalMs));
    }
  }

  /** Sets the files of an `<input type=file>` (fires its change event). */
  async setFiles(selector, files) {
    const { root } = await this.send("DOM.getDocument", { depth: 1 });
    const { nodeId } = await this.send("DOM.querySelector", { nodeId: root.nodeId, selector });
    if (!nodeId) throw new Error(`no element ${selector}`);
    await this.send("DOM.setFileInputFiles", { nodeId, files });
  }

  /** A mouse drag from (x0, y0) to (x1, y1) in CSS pixels of the viewport; the browser turns
   *  the mouse events into pointer events. */
  async drag(x0, y0, x1, y1, steps = 8) {
    const ev = (type, x, y, extra = {}) =>
      this.send("Input.dispatchMouseEvent", { type, x, y, button: "left", pointerType: "mouse", ...extra });
    await ev("mouseMoved", x0, y0, { button: "none" });
    await ev("mousePressed", x0, y0, { clickCount: 1, buttons: 1 });
    for (let i = 1; i <= steps; i++) {
      await ev("mouseMoved", x0 + ((x1 - x0) * i) / steps, y0 + ((y1 - y0) * i) / steps, { buttons: 1 });
    }
    await ev("mouseReleased", x1, y1, { clickCount: 1, buttons: 0 });
  }

  async screenshot() {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" });
    return Buffer.from(data, "base64");
  }

  report() {
    return `page console (last 30):\n  ${this.console.slice(-30).join("\n  ")}`;
  }
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
  ".webm": "video/webm",
};

/** Serves `root` on 127.0.0.1 (a free port); `extra` maps URL paths to files outside it.
 *  Returns { url, close }. */
export async function serve(root, extra = {}) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = extra[path];
    if (!file) {
      const rel = normalize(path === "/" ? "/index.html" : path);
      if (rel.includes("..")) {
        res.writeHead(403).end();
        return;
      }
      file = join(root, rel);
    }
    try {
      if (!statSync(file).isFile()) throw new Error("not a file");
      const body = readFileSync(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] || "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(ok)) };
}
