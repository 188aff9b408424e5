// Parse Mermaid charts with the real Mermaid parser, under Node, without a browser.
//
//   node parse.mjs < charts.json      a JSON array of chart texts on stdin
//   node parse.mjs a.mmd b.mmd        or files, one chart each
//
// Prints a JSON array, one entry per chart: {"ok": true, "type": "pie"} or
// {"ok": false, "error": "..."}. Exits 0 when every chart parsed, 1 when any did not,
// 2 on bad input. mermaid.parse() needs a DOM (its sanitizer, DOMPurify, hooks into
// `window`), so jsdom provides one; nothing is rendered.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let charts;
try {
  const args = process.argv.slice(2);
  charts = args.length
    ? args.map((path) => readFileSync(path, 'utf8'))
    : JSON.parse(readFileSync(0, 'utf8'));
  if (!Array.isArray(charts) || !charts.every((c) => typeof c === 'string')) {
    throw new Error('expected a JSON array of strings');
  }
} catch (err) {
  process.stderr.write(`parse.mjs: bad input: ${err.message}\n`);
  process.exit(2);
}

const results = [];
for (const chart of charts) {
  try {
    const parsed = await mermaid.parse(chart);
    results.push({ ok: true, type: parsed.diagramType });
  } catch (err) {
    results.push({ ok: false, error: String(err?.message ?? err) });
  }
}
// Exit only once stdout is flushed: a pipe is written asynchronously, and process.exit()
// would cut a long answer short.
const code = results.every((r) => r.ok) ? 0 : 1;
process.stdout.write(JSON.stringify(results) + '\n', () => process.exit(code));
