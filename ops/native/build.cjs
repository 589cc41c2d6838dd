#!/usr/bin/env node
// Builds the native kernels during `npm ci` / `npm install` (the package's install step).
// It never fails the install: without a compiler or Node headers, lwm runs on plain tfjs
// kernels and `lwm doctor` says why. Set LWM_NATIVE_BUILD=0 to skip, =require to fail loudly.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const dir = __dirname;
const mode = process.env.LWM_NATIVE_BUILD || 'auto';
if (mode === '0') {
  console.log('lwm: LWM_NATIVE_BUILD=0, skipping the native kernels');
  process.exit(0);
}

function nodeGyp() {
  const candidates = [];
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {}
  return candidates.find((p) => fs.existsSync(p));
}

// Node's own headers, so node-gyp never tries to download them (there may be no network).
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

const gyp = nodeGyp();
if (!gyp) fail('node-gyp not found (it ships with npm)');
const args = [gyp, 'rebuild', '--directory', dir];
const nd = nodeDir();
if (nd) args.push(`--nodedir=${nd}`);
const jobs = Math.max(1, require('node:os').availableParallelism?.() ?? 1);
args.push(`--jobs=${jobs}`);
const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const log = path.join(dir, 'build-error.log');
  fs.writeFileSync(log, `${r.stdout}\n${r.stderr}`);
  fail(`node-gyp failed (see ${log})`);
}
console.log(`lwm: native kernels built (${path.join(dir, 'build', 'Release', 'lwm_native.node')})`);

function fail(why) {
  const msg = `lwm: native kernels not built: ${why}; lwm will run on plain tfjs kernels (slower). Needs python3, make and g++.`;
  if (mode === 'require') {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
}
