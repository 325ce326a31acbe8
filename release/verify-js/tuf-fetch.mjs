#!/usr/bin/env node
// Fetch one target from RansomEye's TUF repository with tuf-js, a TUF client written
// independently of the Python pipeline, to show that the repository follows the specification:
//
//   node release/verify-js/tuf-fetch.mjs --root root.json --metadata-url URL --targets-url URL \
//     --cache DIR --target 1.0.0/ransomeye-core-1.0.0.tar.gz --out FILE
//
// DIR is the client's metadata cache, as a real client keeps it: the first run copies the
// trusted root into DIR/root.json (later runs keep the root there, which tuf-js may have
// rotated, and ignore the --root file), and tuf-js keeps the newest trusted timestamp,
// snapshot and targets metadata there, so rollback protection holds across runs.
// The target is downloaded to a temporary file beside FILE and renamed into place only once
// tuf-js has verified it; FILE is not touched otherwise.
// Exit 0 and one line on stdout when the target is verified; 1 and one line on stderr when
// tuf-js refused the repository or the target; 2 when it could not run (usage, local files).

import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, createReadStream, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import modelErrors from '@tufjs/models/dist/error.js';
import tufLib from 'tuf-js';
import tufErrors from 'tuf-js/dist/error.js';
import { Failure, cannotRun, refused } from './failure.mjs';

const PROG = 'tuf-fetch';
const USAGE =
  'usage: tuf-fetch.mjs --root ROOT.json --metadata-url URL --targets-url URL --cache DIR --target PATH --out FILE';

// tuf-js's error classes do not set `name`, and tuf-js wraps what goes wrong with the snapshot
// and targets metadata in a RuntimeError whose message is the inner error as a string: name
// them, so that such a message says "BadVersionError: ..." and not "Error: ...".
for (const errors of [tufErrors, modelErrors]) {
  for (const [name, cls] of Object.entries(errors)) {
    if (typeof cls === 'function' && cls.prototype instanceof Error) {
      Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true });
    }
  }
}

const oneLine = (text) => String(text).replace(/\s*\n\s*/g, ' ').trim();

// What tuf-js threw, as "ClassName: message" (with the cause of a network error).
function describe(e) {
  if (!(e instanceof Error)) return `${typeof e}: ${oneLine(e)}`;
  const cls = e.constructor?.name || e.name || 'Error';
  const cause = e.cause instanceof Error ? ` (${e.cause.code ?? e.cause.constructor?.name}: ${e.cause.message})` : '';
  return oneLine(`${cls}: ${e.message}${cause}`);
}

function requireFile(path, what) {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw cannotRun(`${path}: cannot read the ${what} (${e.code ?? e.message})`);
  }
  if (!st.isFile()) throw cannotRun(`${path}: the ${what} is not a regular file`);
}

// A fresh cache starts from the trusted root; a cache that has a root keeps it (it may be a
// newer, rotated root than the file given), as a real client's does.
function prepareCache(cache, rootPath) {
  try {
    mkdirSync(cache, { recursive: true });
  } catch (e) {
    throw cannotRun(`${cache}: cannot create the cache directory (${e.code ?? e.message})`);
  }
  const cachedRoot = join(cache, 'root.json');
  try {
    statSync(cachedRoot);
    return;
  } catch (e) {
    if (e.code !== 'ENOENT') throw cannotRun(`${cachedRoot}: cannot read the cached root (${e.code ?? e.message})`);
  }
  const tmp = join(cache, `.root.json.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    copyFileSync(rootPath, tmp);
    renameSync(tmp, cachedRoot);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw cannotRun(`${cachedRoot}: cannot copy the trusted root into the cache (${e.code ?? e.message})`);
  }
}

async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest('hex');
}

function parse(argv) {
  const names = ['root', 'metadata-url', 'targets-url', 'cache', 'target', 'out'];
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: Object.fromEntries(names.map((n) => [n, { type: 'string' }])),
      allowPositionals: false,
    });
  } catch (e) {
    throw cannotRun(`${oneLine(e.message)}; ${USAGE}`);
  }
  const missing = names.filter((n) => !args.values[n]);
  if (missing.length) throw cannotRun(`missing ${missing.map((n) => `--${n}`).join(', ')}; ${USAGE}`);
  for (const n of ['metadata-url', 'targets-url']) {
    let url;
    try {
      url = new URL(args.values[n]);
    } catch {
      throw cannotRun(`--${n} ${args.values[n]}: not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw cannotRun(`--${n} ${args.values[n]}: not an http(s) URL`);
  }
  return args.values;
}

async function main(argv) {
  const opts = parse(argv);
  const { root: rootPath, cache, target } = opts;
  const out = resolve(opts.out);
  requireFile(rootPath, 'trusted root');
  try {
    if (!statSync(dirname(out)).isDirectory()) throw new Error('ENOTDIR');
  } catch (e) {
    throw cannotRun(`${opts.out}: its directory does not exist (${e.code ?? e.message})`);
  }
  prepareCache(cache, rootPath);

  let updater;
  try {
    updater = new tufLib.Updater({
      metadataDir: cache,
      metadataBaseUrl: opts['metadata-url'],
      targetBaseUrl: opts['targets-url'],
    });
  } catch (e) {
    throw cannotRun(`${join(cache, 'root.json')}: not a valid trusted root: ${describe(e)}`);
  }

  const tmp = join(dirname(out), `.${basename(out)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    let info;
    try {
      await updater.refresh();
      info = await updater.getTargetInfo(target);
    } catch (e) {
      throw refused(describe(e));
    }
    if (!info) throw refused(`${target} is not a target of the repository`);
    try {
      // tuf-js downloads to its own temporary file, checks length and hashes, then copies it here.
      await updater.downloadTarget(info, tmp);
    } catch (e) {
      throw refused(describe(e));
    }
    const length = statSync(tmp).size;
    const digest = await sha256File(tmp);
    renameSync(tmp, out);
    console.log(`${PROG}: ${target} verified (${length} bytes, sha256 ${digest})`);
  } finally {
    rmSync(tmp, { force: true });
  }
}

try {
  await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof Failure && e.exitCode === 1) {
    process.stderr.write(`${PROG}: refused: ${e.message}\n`);
  } else {
    process.stderr.write(`${PROG}: error: ${e instanceof Failure ? e.message : describe(e)}\n`);
  }
  process.exitCode = e instanceof Failure ? e.exitCode : 2;
}
