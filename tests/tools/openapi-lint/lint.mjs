// lint.mjs: make check-openapi's OpenAPI validator.
//
//   node BUILD/npm/openapi-lint/lint.mjs proto/openapi.yaml
//
// Validates the document against the official OpenAPI 3.1 JSON schema with
// @seriousme/openapi-schema-validator (its version pinned by package-lock.json
// beside this file; mk/openapi.mk installs it under build/npm/ and copies this
// script there, so that the imports resolve).  Then it proves that it can
// fail: the same document with info.version removed, and with a response under
// a status that is not one, must both be refused.  The Schema Objects inside
// (the JSON Schema 2020-12 dialect) and the examples are checked by
// tests/integration/test_openapi_doc.py.  Exit status 1 on any failure.
import { readFileSync } from "node:fs";
import { argv, exit } from "node:process";
import { Validator } from "@seriousme/openapi-schema-validator";
import YAML from "yaml";

const file = argv[2];
if (!file) {
  console.error("usage: node lint.mjs OPENAPI.yaml");
  exit(2);
}
const text = readFileSync(file, "utf8");

async function check(doc) {
  const v = new Validator();
  const res = await v.validate(doc);
  return { ...res, version: v.version };
}

const res = await check(YAML.parse(text));
if (!res.valid) {
  console.error(`check-openapi: ${file} is not a valid OpenAPI document:`);
  console.error(JSON.stringify(res.errors, null, 2));
  exit(1);
}
const broken = [
  ["info.version removed", (d) => delete d.info.version],
  ["a response under status 2000", (d) => {
    const op = d.paths["/healthz"].get;
    op.responses["2000"] = op.responses["200"];
  }],
];
for (const [what, spoil] of broken) {
  const d = YAML.parse(text);
  spoil(d);
  if ((await check(d)).valid) {
    console.error(`check-openapi: the validator accepts a broken document (${what})`);
    exit(1);
  }
}
console.log(`check-openapi: ${file} is valid OpenAPI ${res.version} ` +
  `(@seriousme/openapi-schema-validator; ${broken.length} broken variants refused)`);
