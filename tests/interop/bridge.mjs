// Drive a real TypeScript state adapter from another process (the Python interop tests).
//
//   node bridge.mjs <ioredis|redis> <redis url> <keyPrefix>
//
// Creates the adapter with createIoRedisState / createRedisState({ url, keyPrefix }),
// connects, writes one line {"ready": true, "adapter": ..., "versions": {...}}, then
// reads newline-delimited JSON requests on stdin:
//
//   {"id": 1, "op": "acquireLock", "args": ["slack:C1:1.2", 30000]}
//
// and writes one line per request, in completion order (requests run concurrently):
//
//   {"id": 1, "ok": true, "result": {"threadId": ..., "token": ..., "expiresAt": ...}}
//   {"id": 1, "ok": false, "error": "..."}
//
// The ops are the StateAdapter methods with their TypeScript arguments, plus:
//   close                          disconnect, reply, exit 0
//   reopen(keyPrefix)              wait for requests in flight, disconnect, and create and
//                                  connect a fresh adapter with another key prefix (so a
//                                  test suite can use one process for many tests)
//   enqueueChatMessage(threadId, serializedMessage, maxSize, ttlMs)
//                                  enqueue a real `chat` Message (Message.fromJSON) in the
//                                  entry shape the Chat SDK itself builds
//   dequeueChatMessage(threadId)   dequeue and revive with Message.fromJSON; returns
//                                  {entry, revived: message.toJSON()} or null
//
// stdout carries the protocol only: console.log/info/debug are sent to stderr.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

console.log = console.error;
console.info = console.error;
console.debug = console.error;

const ADAPTERS = {
  ioredis: { pkg: "@chat-adapter/state-ioredis", factory: "createIoRedisState", client: "ioredis" },
  redis: { pkg: "@chat-adapter/state-redis", factory: "createRedisState", client: "redis" },
};

const CONNECT_TIMEOUT_MS = 10_000;

const METHODS = new Set([
  "subscribe",
  "unsubscribe",
  "isSubscribed",
  "acquireLock",
  "releaseLock",
  "extendLock",
  "forceReleaseLock",
  "get",
  "set",
  "setIfNotExists",
  "delete",
  "appendToList",
  "getList",
  "enqueue",
  "dequeue",
  "queueDepth",
]);

function write(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function installedVersion(name, fromDir) {
  // Node's lookup: the nearest node_modules/<name> walking up from fromDir.
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name, "package.json");
    if (existsSync(candidate)) {
      return { version: JSON.parse(readFileSync(candidate, "utf8")).version, dir: dirname(candidate) };
    }
    if (dirname(dir) === dir) {
      return { version: null, dir: null };
    }
  }
}

function versionsOf(spec) {
  const here = dirname(fileURLToPath(import.meta.url));
  const adapter = installedVersion(spec.pkg, here);
  const versions = { [spec.pkg]: adapter.version, node: process.versions.node };
  for (const dep of [spec.client, "chat"]) {
    versions[dep] = adapter.dir ? installedVersion(dep, adapter.dir).version : null;
  }
  return versions;
}

async function main() {
  const [adapterName, url, keyPrefix] = process.argv.slice(2);
  const spec = ADAPTERS[adapterName];
  if (!spec || !url || keyPrefix === undefined) {
    write({ ready: false, error: "usage: node bridge.mjs <ioredis|redis> <redis url> <keyPrefix>" });
    process.exit(2);
  }
  const module = await import(spec.pkg);
  const { Message } = await import("chat");

  async function open(prefix) {
    const adapter = module[spec.factory]({ url, keyPrefix: prefix });
    // node-redis retries a refused connection forever: give up after a while.
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no connection in ${CONNECT_TIMEOUT_MS} ms`)),
        CONNECT_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([adapter.connect(), timeout]);
    } catch (error) {
      try {
        const client = adapter.getClient();
        (client.destroy ?? client.disconnect)?.call(client); // stop reconnecting
      } catch {
        // already closed
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return adapter;
  }

  let state;
  try {
    state = await open(keyPrefix);
  } catch (error) {
    write({ ready: false, error: `connect failed: ${error?.message ?? error}` });
    process.exit(1);
  }

  let closing = false;
  const inFlight = new Set();
  let gate = Promise.resolve();
  const extras = {
    async enqueueChatMessage(threadId, serialized, maxSize, ttlMs) {
      // The entry exactly as the Chat SDK's Chat class builds it (message first).
      const entry = {
        message: Message.fromJSON(serialized),
        enqueuedAt: Date.now(),
        expiresAt: Date.now() + ttlMs,
      };
      return await state.enqueue(threadId, entry, maxSize);
    },
    async dequeueChatMessage(threadId) {
      const entry = await state.dequeue(threadId);
      if (entry === null) {
        return null;
      }
      return { entry, revived: Message.fromJSON(entry.message).toJSON() };
    },
  };

  // `earlier`: the requests in flight when this one arrived.
  async function handle(request, earlier) {
    const { id, op, args = [] } = request;
    if (op === "close") {
      closing = true;
      await Promise.allSettled(earlier);
      let reply = { id, ok: true, result: null };
      try {
        await state.disconnect();
      } catch (error) {
        reply = { id, ok: false, error: String(error?.message ?? error) };
      }
      process.stdout.write(`${JSON.stringify(reply)}\n`, () => process.exit(0));
      return;
    }
    if (op === "reopen") {
      // Requests that arrived before this one finish on the old adapter.
      await Promise.allSettled(earlier);
      try {
        const next = await open(args[0]);
        await state.disconnect();
        state = next;
        write({ id, ok: true, result: null });
      } catch (error) {
        write({ id, ok: false, error: String(error?.message ?? error) });
      }
      return;
    }
    try {
      let result;
      if (METHODS.has(op)) {
        result = await state[op](...args);
      } else if (Object.hasOwn(extras, op)) {
        result = await extras[op](...args);
      } else {
        throw new Error(`unknown op ${JSON.stringify(op)}`);
      }
      write({ id, ok: true, result: result === undefined ? null : result });
    } catch (error) {
      write({ id, ok: false, error: String(error?.message ?? error) });
    }
  }

  write({ ready: true, adapter: adapterName, keyPrefix, versions: versionsOf(spec) });

  const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on("line", (line) => {
    if (!line.trim() || closing) {
      return;
    }
    let request;
    try {
      request = JSON.parse(line);
    } catch (error) {
      write({ id: null, ok: false, error: `bad request: ${error.message}` });
      return;
    }
    const earlier = [...inFlight];
    const pending = gate.then(() => handle(request, earlier));
    if (request.op === "reopen") {
      gate = pending; // later requests run on the new adapter
    }
    inFlight.add(pending);
    pending.finally(() => inFlight.delete(pending));
  });
  lines.on("close", async () => {
    // stdin closed without a close op: the driver went away.
    if (!closing) {
      closing = true;
      try {
        await Promise.allSettled([...inFlight]);
        await state.disconnect();
      } finally {
        process.exit(0);
      }
    }
  });
}

main().catch((error) => {
  write({ ready: false, error: String(error?.stack ?? error) });
  process.exit(1);
});
