#!/usr/bin/env node
// Verify an offline Sigstore bundle (v0.3, public-key hint, DSSE in-toto statement) with a
// public key, independently of the Python pipeline, using @sigstore/verify:
//
//   node release/verify-js/verify-bundle.mjs --key keys/release.pub --bundle X.sigstore.json X
//
// The bundle's signature must verify with the given key (its hint must name that key: the
// base64 SHA-256 of its DER SubjectPublicKeyInfo, as cosign writes it); no transparency log,
// SCT or timestamp is required (there are none offline), and the artifact's SHA-256 must be
// the digest of a subject of the signed in-toto statement.
// Exit 0 and one line on stdout when verified; 1 and the reason on stderr when something was
// checked and found wrong; 2 when it could not run (usage, unreadable file).

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';

import bundleLib from '@sigstore/bundle';
import verifyLib from '@sigstore/verify';
import { Failure, cannotRun, refused } from './failure.mjs';

const PROG = 'verify-bundle';
const MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
const MAX_BUNDLE_BYTES = 16 * 1024 * 1024;
const MAX_KEY_BYTES = 64 * 1024;

function readBounded(path, limit, what) {
  let size;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw cannotRun(`${path}: the ${what} is not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof Failure) throw e;
    throw cannotRun(`${path}: cannot read the ${what} (${e.code ?? e.message})`);
  }
  if (size > limit) throw refused(`${path}: the ${what} is ${size} bytes, more than ${limit}`);
  return readFileSync(path);
}

function sha256File(path) {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch (e) {
    throw cannotRun(`${path}: cannot read the artifact (${e.code ?? e.message})`);
  }
}

function loadKey(path) {
  try {
    return createPublicKey(readBounded(path, MAX_KEY_BYTES, 'public key'));
  } catch (e) {
    if (e instanceof Failure) throw e;
    throw cannotRun(`${path}: not a PEM public key (${e.message})`);
  }
}

// What cosign writes as a key's hint: base64(SHA-256(DER SubjectPublicKeyInfo)).
function keyHint(key) {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('base64');
}

function loadBundle(path) {
  const raw = readBounded(path, MAX_BUNDLE_BYTES, 'bundle');
  let json;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw refused(`${path}: not JSON (${e.message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw refused(`${path}: not a bundle`);
  let bundle;
  try {
    bundle = bundleLib.bundleFromJSON(json);
  } catch (e) {
    throw refused(`${path}: not a valid Sigstore bundle (${e.message}${e.fields ? `: ${e.fields.join(', ')}` : ''})`);
  }
  if (bundle.mediaType !== MEDIA_TYPE) throw refused(`${path}: media type ${JSON.stringify(bundle.mediaType)}, not ${MEDIA_TYPE}`);
  if (!bundleLib.isBundleWithDsseEnvelope(bundle)) throw refused(`${path}: holds no DSSE envelope`);
  if (!bundleLib.isBundleWithPublicKey(bundle)) throw refused(`${path}: is not a bundle for a public key`);
  return bundle;
}

// The signature, checked by @sigstore/verify: the key the caller gives, for the one hint it has;
// no certificate authority, log or timestamp authority is trusted, and none is required.
function verifySignature(bundle, key, path) {
  const hint = keyHint(key);
  const trust = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: (bundleHint) => {
      if (bundleHint !== hint) {
        throw new verifyLib.VerificationError({
          code: 'PUBLIC_KEY_ERROR',
          message: `the bundle names the key ${JSON.stringify(bundleHint)}, not the given key ${hint}`,
        });
      }
      return { publicKey: key, validFor: () => true };
    },
  };
  const verifier = new verifyLib.Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  try {
    verifier.verify(verifyLib.toSignedEntity(bundle));
  } catch (e) {
    throw refused(`${path}: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  }
}

// The signed statement must name the artifact's digest.
function checkSubject(bundle, digest, path) {
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== PAYLOAD_TYPE) throw refused(`${path}: payload type ${JSON.stringify(envelope.payloadType)}, not ${PAYLOAD_TYPE}`);
  let statement;
  try {
    statement = JSON.parse(envelope.payload.toString('utf8'));
  } catch (e) {
    throw refused(`${path}: the signed payload is not JSON (${e.message})`);
  }
  if (statement?._type !== STATEMENT_TYPE) throw refused(`${path}: the signed payload is not an in-toto v1 Statement`);
  const subjects = Array.isArray(statement.subject) ? statement.subject : [];
  const match = subjects.find((s) => s?.digest?.sha256 === digest);
  if (!match) throw refused(`${path}: no subject of the statement has the artifact's sha256 ${digest}`);
  return { name: String(match.name), predicateType: String(statement.predicateType) };
}

function main(argv) {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: { key: { type: 'string' }, bundle: { type: 'string' } },
      allowPositionals: true,
    });
  } catch (e) {
    throw cannotRun(`${e.message}`);
  }
  const { key: keyPath, bundle: bundlePath } = args.values;
  if (!keyPath || !bundlePath || args.positionals.length !== 1) {
    throw cannotRun('usage: verify-bundle.mjs --key PUB.pem --bundle X.sigstore.json ARTIFACT');
  }
  const artifact = args.positionals[0];
  const key = loadKey(keyPath);
  const bundle = loadBundle(bundlePath);
  verifySignature(bundle, key, bundlePath);
  const digest = sha256File(artifact);
  const { name, predicateType } = checkSubject(bundle, digest, bundlePath);
  console.log(`verified: ${artifact} sha256:${digest} is the subject ${JSON.stringify(name)} of a ${predicateType} statement signed by ${keyPath}`);
}

try {
  main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`${PROG}: error: ${e.message}\n`);
  process.exitCode = e instanceof Failure ? e.exitCode : 2;
}
