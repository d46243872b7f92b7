// `npm run bundle`: the page as static files in dist/ (index.html, app.js,
// style.css), ready for any static server. Run `npm run build` for the
// whole chain (generate, type-check, bundle).
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "warning",
});
await copyFile(join(here, "index.html"), join(dist, "index.html"));
await copyFile(join(here, "src", "style.css"), join(dist, "style.css"));
console.log(`bundled the page into ${dist}`);
