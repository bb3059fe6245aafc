#!/usr/bin/env node
// Drives the demo page in headless Chromium (playwright-core with the system's chromium):
//   node web/page.mjs URL [--fixture FIXTURE.json] [--bench SOURCES.json] [--type WORD]
//                         [--screenshot FILE.png]
// prints JSON: the page's status line, its table, for a fixture the page translator's
// outputs on it (`{"text": [...], "ids": [...]}`, for the tests to compare with Python's),
// and for `--bench` the batch-1 latency of translator.onnx in the page.
import {readFile} from 'node:fs/promises';
import {parseArgs} from 'node:util';

import {chromium} from 'playwright-core';

const {values: args, positionals} = parseArgs({
  allowPositionals: true,
  options: {
    fixture: {type: 'string'},
    bench: {type: 'string'},
    type: {type: 'string'},
    screenshot: {type: 'string'},
    chromium: {type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium'},
    timeout: {type: 'string', default: '60000'},
  },
});
const timeout = Number(args.timeout);
const browser = await chromium.launch({executablePath: args.chromium, args: ['--no-sandbox']});
try {
  const page = await browser.newPage({viewport: {width: 900, height: 640}, deviceScaleFactor: 1});
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(positionals[0]);
  await page.waitForFunction(() => document.body.dataset.ready, null, {timeout});
  if (await page.evaluate(() => document.body.dataset.ready) !== 'true') {
    throw new Error(`the page did not load its bundle: ${await page.textContent('#status')} ${errors.join('; ')}`);
  }
  const result = {};
  if (args.fixture) {
    const fixture = JSON.parse(await readFile(args.fixture, 'utf-8'));
    result.fixture = await page.evaluate(async (fixture) => {
      const out = {text: [], ids: []};
      for (const setting of fixture.settings) {
        out.text.push(await window.s2sTranslator.translate(fixture.texts, setting));
        out.ids.push(await window.s2sTranslator.translateIds(fixture.sources, setting));
      }
      return out;
    }, fixture);
  }
  if (args.bench) {
    const {sources, beamSize} = JSON.parse(await readFile(args.bench, 'utf-8'));
    result.bench = await page.evaluate(async ({sources, beamSize}) => {
      const {latency} = await import('./s2s.mjs');
      return latency(window.s2sTranslator, sources, {beamSize});
    }, {sources, beamSize});
  }
  if (args.type !== undefined) {
    const before = await page.evaluate(() => Number(document.body.dataset.translated || 0));
    await page.fill('#text', '');
    await page.type('#text', args.type, {delay: 30});
    await page.waitForFunction((count) => Number(document.body.dataset.translated) >= count + 1, before,
                               {timeout});
    await page.waitForTimeout(300); // the last keystroke's translation
  }
  result.status = await page.textContent('#status');
  result.table = await page.$$eval('#results tbody tr', (rows) => rows.map(
    (row) => Array.from(row.cells, (cell) => cell.textContent)));
  if (args.screenshot) await page.screenshot({path: args.screenshot, fullPage: false});
  result.errors = errors;
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
}
