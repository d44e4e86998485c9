// Validates rendered manifests offline against the Kubernetes API schemas (npm kubernetes-models):
//  1. each object with its kind's schema (types, required fields, enums, formats);
//  2. unknown fields, which those schemas let through: each object is written into a TypeScript
//     file as a literal of its kind's interface, and tsc's excess-property check names any field
//     the API does not have (a misspelt `readinessProbes` would otherwise be dropped by the server).
//   node deploy/k8s/validate.mjs WORK-DIR rendered.yaml...
// Prints one line per object and exits 1 on any problem.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve, basename } from "node:path";
import { execFileSync } from "node:child_process";
import { pathToFileURL } from "node:url";

const tools = resolve(process.env.K8S_TOOLS ?? process.cwd());
const require = createRequire(join(tools, "package.json"));
const modulePath = (m) => join(tools, "node_modules", m + ".js");
const yaml = require("js-yaml");
const [work, ...files] = process.argv.slice(2);
mkdirSync(work, { recursive: true });
const problems = [];
const ts = [];
let n = 0;
for (const file of files) {
  for (const obj of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!obj) continue;
    const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : [null, obj.apiVersion];
    const module = `kubernetes-models/${group ? group + "/" : ""}${version}/${obj.kind}`;
    const what = `${basename(file)}: ${obj.kind}/${obj.metadata?.name}`;
    let model;
    try { model = (await import(pathToFileURL(modulePath(module)).href))[obj.kind]; }
    catch { problems.push(`${what}: no schema for ${obj.apiVersion} ${obj.kind}`); continue; }
    try { new model(obj).validate(); console.log(`schema ok  ${what}`); }
    catch (e) { problems.push(`${what}: ${e.message}`); }
    const id = `o${n++}`;
    ts.push(`import type { I${obj.kind} as T${id} } from ${JSON.stringify(modulePath(module).replace(/\.js$/, ".js"))};`);
    ts.push(`// ${what}\nexport const ${id}: T${id} = ${JSON.stringify(obj, null, 1)};`);
  }
}
const tsFile = resolve(work, "manifests.ts");
writeFileSync(tsFile, ts.join("\n") + "\n");
try {
  execFileSync(require.resolve("typescript/bin/tsc"), ["--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", tsFile], { stdio: "pipe" });
  console.log(`fields ok  ${n} objects (tsc)`);
} catch (e) {
  problems.push(`unknown or mistyped fields (tsc):\n${e.stdout}`);
}
if (problems.length) { for (const p of problems) console.log(`PROBLEM ${p}`); process.exit(1); }
console.log(`valid: ${n} objects`);
