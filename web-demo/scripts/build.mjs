// Bundles src/ into dist/ (index.html, style.css, app.js) with esbuild.
// Usage: node scripts/build.mjs [--dev]   (--dev: no minification, inline source map)
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');

/** Builds the bundle; `dev` keeps it readable with an inline source map. */
export async function buildDemo({ dev = false } = {}) {
  await mkdir(dist, { recursive: true });
  await build({
    entryPoints: [path.join(src, 'app.js')],
    outfile: path.join(dist, 'app.js'),
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome111', 'firefox120', 'safari16'],
    minify: !dev,
    sourcemap: dev ? 'inline' : false,
    logLevel: 'warning',
  });
  await copyFile(path.join(src, 'index.html'), path.join(dist, 'index.html'));
  await copyFile(path.join(src, 'style.css'), path.join(dist, 'style.css'));
  return dist;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = await buildDemo({ dev: process.argv.includes('--dev') });
  console.log(`built ${out}`);
}
