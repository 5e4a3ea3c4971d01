// Builds src/ into dist/: exactly index.html, app.js and style.css, minified. The output
// depends only on the sources and the locked dependencies (no timestamps, no paths, no
// source maps), so CI can rebuild it and `git diff --exit-code web-demo/dist`.
// The server embeds these three files at compile time (crates/ferrosoup-server/src/http.rs).
// Usage: node scripts/build.mjs
import { build, transform } from 'esbuild';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');
const OUTPUTS = ['app.js', 'index.html', 'style.css'];

/** Collapses the whitespace between tags and drops comments; the page has no <pre> text. */
function minifyHtml(html) {
  return `${html
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/>\s+</g, '><')
    .replace(/\s{2,}/g, ' ')
    .trim()}\n`;
}

/**
 * Bundles the page script `entry` with its imports (mediasoup-client, protoo-client),
 * minified, for the browsers the demo supports; imports also resolve from `nodePaths`.
 * Returns the bytes.
 */
export async function bundlePage(entry, nodePaths = []) {
  const js = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: ['chrome111', 'firefox120', 'safari16'],
    minify: true,
    legalComments: 'eof',
    charset: 'utf8',
    logLevel: 'warning',
    nodePaths,
  });
  return js.outputFiles[0].contents;
}

/** Builds the bundle into dist/ and removes anything else found there. */
export async function buildDemo() {
  await mkdir(dist, { recursive: true });
  const js = await bundlePage(path.join(src, 'app.js'));
  const css = await transform(await readFile(path.join(src, 'style.css'), 'utf8'), {
    loader: 'css',
    minify: true,
    charset: 'utf8',
  });
  const html = minifyHtml(await readFile(path.join(src, 'index.html'), 'utf8'));
  await writeFile(path.join(dist, 'app.js'), js);
  await writeFile(path.join(dist, 'style.css'), css.code);
  await writeFile(path.join(dist, 'index.html'), html);
  for (const name of await readdir(dist)) {
    if (!OUTPUTS.includes(name)) await rm(path.join(dist, name), { recursive: true, force: true });
  }
  return dist;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = await buildDemo();
  console.log(`built ${out}`);
}
