// The TypeScript side of chat-state's benchmark (spawned by benchmarks/run.py).
//
//   node bench.mjs < config.json
//
// The config (one JSON object on stdin):
//   { "adapter": "ioredis" | "redis", "url": "redis://127.0.0.1:PORT/0",
//     "workloads": ["w1", ...], "concurrency": [1, 64], "warmupMs": 500, "durationMs": 2000,
//     "constants": { lockTtlMs, cacheTtlMs, queueMax, queueExpiryMs, subscriptions,
//                    cacheKeys, cacheValue, message },
//     "modulesDir": optional, default ../tests/interop/node_modules }
//
// Runs the same workloads as the Python subjects (see benchmarks/_workloads.py) on the
// pinned adapter installed for the interop tests (`cd tests/interop && npm ci`): c1 is one
// chain of sequential awaits, c64 is 64 concurrent promise chains on one adapter. Each cell
// warms up, then counts the ops completed in a fixed window (fixed before the chains start;
// each chain reads the clock after every op). The subscriptions set is
// seeded by the Python runner before this starts. Prints one JSON line on stdout:
//   { "ok": true, "adapter": ..., "versions": {...}, "results": [...], "maxRssKb": VmHWM }
// or { "ok": false, "error": "..." } (exit status 1). Logs go to stderr.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";

console.log = console.error;
console.info = console.error;
console.debug = console.error;
console.warn = console.error;

const HERE = dirname(fileURLToPath(import.meta.url));
const ADAPTERS = {
  ioredis: { pkg: "@chat-adapter/state-ioredis", factory: "createIoRedisState", client: "ioredis" },
  redis: { pkg: "@chat-adapter/state-redis", factory: "createRedisState", client: "redis" },
};
const MAX_OPS_PER_CHAIN = 50_000_000;
const MAX_ERRORS = 100;
const CONNECT_TIMEOUT_MS = 10_000;

function peakRssKb() {
  // VmHWM of this process. (process.resourceUsage().maxRSS is getrusage's ru_maxrss, which
  // Linux carries over from the parent across fork + exec: it would report Python's peak.)
  try {
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (match) {
      return Number(match[1]);
    }
  } catch {
    // not Linux
  }
  return null;
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function readStdin() {
  return readFileSync(0, "utf8");
}

function packageDir(modulesDir, name) {
  const dir = join(modulesDir, name);
  if (!existsSync(join(dir, "package.json"))) {
    throw new Error(`${name} is not installed in ${modulesDir} (cd tests/interop && npm ci)`);
  }
  return dir;
}

function versionOf(modulesDir, name) {
  try {
    return JSON.parse(readFileSync(join(packageDir(modulesDir, name), "package.json"), "utf8"))
      .version;
  } catch {
    return null;
  }
}

async function importPackage(modulesDir, name) {
  // The packages are ESM-only ("exports" with an "import" condition): resolve the entry
  // from package.json and import it by file URL; its own imports resolve from there.
  const dir = packageDir(modulesDir, name);
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const root = meta.exports?.["."];
  const entry = (typeof root === "string" ? root : (root?.import ?? root?.default)) ?? meta.main;
  return await import(pathToFileURL(join(dir, entry)).href);
}

// -- the workloads (keep in step with benchmarks/_workloads.py) -------------------------

function member(n) {
  return `slack:C${String(n % 97).padStart(9, "0")}:${1700000000 + n}.${String(n % 1000000).padStart(6, "0")}`;
}

function threadId(tag, i) {
  return `slack:CBENCH${tag}:${1700000000 + i}.000100`;
}

function makeOp(state, workload, tag, k) {
  switch (workload) {
    case "w1":
      return async (i) => {
        const lock = await state.acquireLock(threadId(tag, i), k.lockTtlMs);
        if (lock === null) {
          return false;
        }
        await state.releaseLock(lock);
        return true;
      };
    case "w2":
      return async (i) => await state.setIfNotExists(`dedupe:${tag}:${i}`, true, k.cacheTtlMs);
    case "w3":
      return async (i) => {
        const key = `user:${i % k.cacheKeys}`;
        await state.set(key, k.cacheValue, k.cacheTtlMs);
        return (await state.get(key)) !== null;
      };
    case "w4":
      return async (i) => await state.isSubscribed(member(i % k.subscriptions));
    case "w5":
      return async (i) => {
        const thread = threadId(tag, i);
        const now = Date.now();
        // The entry as the Chat SDK builds it (message first).
        const entry = { message: k.message, enqueuedAt: now, expiresAt: now + k.queueExpiryMs };
        await state.enqueue(thread, entry, k.queueMax);
        return (await state.dequeue(thread)) !== null;
      };
    default:
      throw new Error(`unknown workload ${workload}`);
  }
}

async function measure(op, concurrency, warmupMs, durationMs) {
  // The window is fixed up front; each chain reads the clock after every op and counts
  // the ops that completed inside it (as benchmarks/_measure.py does).
  let counter = 0;
  let counted = 0;
  let anomalies = 0;
  let errors = 0;
  let firstError = null;
  let abandoned = false;
  const t0 = performance.now() + warmupMs;
  const t1 = t0 + durationMs;

  async function chain() {
    for (let n = 0; n < MAX_OPS_PER_CHAIN && !abandoned; n++) {
      let ok;
      try {
        ok = await op(counter++);
      } catch (error) {
        errors++;
        firstError ??= String(error?.message ?? error);
        if (errors >= MAX_ERRORS) {
          abandoned = true;
        }
        if (performance.now() >= t1) {
          return;
        }
        await sleep(0);
        continue;
      }
      const now = performance.now();
      if (now >= t1) {
        return;
      }
      if (now >= t0) {
        counted++;
        if (!ok) {
          anomalies++;
        }
      }
    }
  }

  await Promise.all(Array.from({ length: concurrency }, () => chain()));
  const seconds = (t1 - t0) / 1000;
  const result = {
    concurrency,
    ops: counted,
    seconds: Math.round(seconds * 10000) / 10000,
    ops_per_s: null,
    anomalies,
    errors,
    error: null,
    notes: [],
  };
  if (errors >= MAX_ERRORS) {
    result.error = `abandoned after ${errors} failed ops: ${firstError}`;
  } else {
    if (errors) {
      result.notes.push(`${errors} failed ops, first: ${firstError}`);
    }
    result.ops_per_s = Math.round((counted / seconds) * 10) / 10;
  }
  if (anomalies) {
    result.notes.push(`${anomalies} ops returned an unexpected result`);
  }
  if (result.error === null && result.ops === 0) {
    result.notes.push("no op completed inside the window");
  }
  return result;
}

async function connect(state) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no connection in ${CONNECT_TIMEOUT_MS} ms`)),
      CONNECT_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([state.connect(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function main() {
  const config = JSON.parse(readStdin());
  const spec = ADAPTERS[config.adapter];
  if (!spec) {
    throw new Error(`unknown adapter ${JSON.stringify(config.adapter)} (ioredis or redis)`);
  }
  const modulesDir = resolve(config.modulesDir ?? join(HERE, "..", "tests", "interop", "node_modules"));
  const module = await importPackage(modulesDir, spec.pkg);
  const adapterDir = packageDir(modulesDir, spec.pkg);
  const versions = {
    [spec.pkg]: versionOf(modulesDir, spec.pkg),
    // the client library as the adapter resolves it (nested install first)
    [spec.client]:
      versionOf(join(adapterDir, "node_modules"), spec.client) ?? versionOf(modulesDir, spec.client),
    chat: versionOf(join(adapterDir, "node_modules"), "chat") ?? versionOf(modulesDir, "chat"),
    node: process.versions.node,
  };
  const state = module[spec.factory]({ url: config.url, keyPrefix: "chat-sdk" });
  try {
    await connect(state);
  } catch (error) {
    try {
      const client = state.getClient();
      (client.destroy ?? client.disconnect)?.call(client);
    } catch {
      // already closed
    }
    throw error;
  }
  const results = [];
  try {
    for (const workload of config.workloads) {
      for (const concurrency of config.concurrency) {
        const tag = `${workload}c${concurrency}`;
        const op = makeOp(state, workload, tag, config.constants);
        const cell = await measure(op, concurrency, config.warmupMs, config.durationMs);
        results.push({ workload, ...cell });
      }
    }
  } finally {
    await state.disconnect();
  }
  emit({
    ok: true,
    adapter: config.adapter,
    versions,
    results,
    maxRssKb: peakRssKb(),
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    emit({ ok: false, error: String(error?.stack ?? error) });
    process.exit(1);
  },
);
