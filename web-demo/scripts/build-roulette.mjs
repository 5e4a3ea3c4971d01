// Builds the roulette example's page (examples/roulette/web) into examples/roulette/dist:
// exactly index.html and app.js (mediasoup-client and protoo-client bundled from this
// directory's node_modules), minified, with no timestamps, paths or source maps, so CI can
// rebuild it and `git diff --exit-code`. The roulette binary embeds both files at compile
// time (examples/roulette/src/main.rs).
// Usage: node scripts/build-roulette.mjs
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { bundlePage } from './build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../examples/roulette');
const src = path.join(root, 'web');
const dist = path.join(root, 'dist');

export async function buildRoulette() {
  await mkdir(dist, { recursive: true });
  // The page's imports resolve from web-demo's dependencies.
  const js = await bundlePage(path.join(src, 'app.js'), [path.resolve(here, '../node_modules')]);
  const html = await readFile(path.join(src, 'index.html'), 'utf8');
  await writeFile(path.join(dist, 'app.js'), js);
  await writeFile(path.join(dist, 'index.html'), html);
  return dist;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(`built ${await buildRoulette()}`);
}
