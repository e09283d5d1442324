#!/usr/bin/env node
// The import rules of docs/design.md ("Layers"), checked on the TypeScript sources:
//   native <- common <- proto <- image <- {sender, receiver} <- {bench, test}
// a folder imports only from its own layer or the layers left of it (common/fault-injection.ts,
// which imports nothing, is open to all); sender/ and receiver/ never import each other; and no
// file is part of an import cycle. Prints each violation, exits 1 if any.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RANK = { native: 0, common: 1, types: 1, proto: 2, image: 3, sender: 4, receiver: 4, bench: 5, test: 5 };
const SIBLINGS_APART = [['sender', 'receiver']];
// Importable from every layer: each imports nothing of the project (checked below).
const LEAVES = new Set(['common/fault-injection.ts']);

function listTs(dir) {
  const out = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules') out.push(...listTs(rel));
    } else if (/\.ts$/.test(e.name)) out.push(rel);
  }
  return out;
}

function resolveImport(from, spec) {
  const base = path.join(path.dirname(from), spec);
  for (const cand of [base, `${base}.ts`, `${base}.d.ts`, path.join(base, 'index.ts')]) {
    const abs = path.join(root, cand);
    if (fs.existsSync(abs) && fs.statSync(abs).isFile()) return path.normalize(cand);
  }
  return null;
}

const files = Object.keys(RANK)
  .filter((d) => fs.existsSync(path.join(root, d)))
  .flatMap(listTs);
const graph = new Map();
const problems = [];
const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"](\.[^'"]+)['"]|require\(\s*['"](\.[^'"]+)['"]\s*\)|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;
for (const f of files) {
  const src = fs.readFileSync(path.join(root, f), 'utf8');
  const deps = [];
  for (const m of src.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    const target = resolveImport(f, spec);
    if (!target) continue; // a compiled asset or a generated file: tsc reports real misses
    deps.push(target);
    const [a, b] = [f.split(path.sep)[0], target.split(path.sep)[0]];
    if (!(b in RANK)) continue;
    if (LEAVES.has(f)) problems.push(`${f}: imports ${target} (it must import nothing of the project: every layer uses it)`);
    if (RANK[b] > RANK[a] && !LEAVES.has(target)) problems.push(`${f}: imports ${target} (${a}/ may not import from ${b}/, a layer above it)`);
    for (const pair of SIBLINGS_APART) {
      if (a !== b && pair.includes(a) && pair.includes(b)) problems.push(`${f}: imports ${target} (${a}/ and ${b}/ never import each other)`);
    }
  }
  graph.set(f, deps);
}

// Tarjan's strongly connected components: every component of more than one file is a cycle.
let index = 0;
const idx = new Map(),
  low = new Map(),
  stack = [],
  onStack = new Set();
function visit(v) {
  idx.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!graph.has(w)) continue;
    if (!idx.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const comp = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      comp.push(w);
    } while (w !== v);
    if (comp.length > 1) problems.push(`import cycle: ${comp.sort().join(' <-> ')}`);
  }
}
for (const f of graph.keys()) if (!idx.has(f)) visit(f);

for (const p of problems) console.log(p);
console.log(`layers: ${files.length} files, ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
process.exitCode = problems.length ? 1 : 0;
