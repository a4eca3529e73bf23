// Validate an AsyncAPI document (a file path, or stdin) with the official parser.
// Prints {"errors": [...], "warnings": [...], "channels": [...], "operations": [...]} as JSON.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2] || 0, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
const pick = (severity) => diagnostics.filter((d) => d.severity === severity)
  .map((d) => `${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
console.log(JSON.stringify({
  errors: pick(0),
  warnings: pick(1),
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document ? document.operations().all().map((o) => o.id()) : [],
}));
