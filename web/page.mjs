#!/usr/bin/env node
// Drives the demo page in headless Chromium (playwright-core with the system's chromium):
//   node web/page.mjs URL [--fixture FIXTURE.json] [--bench SOURCES.json] [--type WORD]
//                         [--screenshot FILE.png]
//   node web/page.mjs URL --lines FILE
// prints JSON: the page's status line, its table, for a fixture the page translator's
// outputs on it (`{"text": [...], "ids": [...]}`, for the tests to compare with Python's),
// and for `--bench` the batch-1 latency of translator.onnx in the page. With `--lines`, the
// page translates FILE's lines (split as s2s-translate splits them) and this prints the
// best translation of each, one line per input line, as s2s-translate does; the largest
// peak RSS of the browser's processes goes to stderr.
import {createReadStream} from 'node:fs';
import {readFile, readdir} from 'node:fs/promises';
import {parseArgs} from 'node:util';

import {readLines} from './s2s.mjs';

import {chromium} from 'playwright-core';

const {values: args, positionals} = parseArgs({
  allowPositionals: true,
  options: {
    fixture: {type: 'string'},
    lines: {type: 'string'},
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
  if (args.lines) {
    const lines = [];
    for await (const [, line] of readLines(createReadStream(args.lines))) lines.push(line);
    const best = await page.evaluate(async (lines) => {
      const out = [];
      for (let start = 0; start < lines.length; start += 32) {
        for (const hypotheses of await window.s2sTranslator.translate(lines.slice(start, start + 32))) {
          out.push(hypotheses.length ? hypotheses[0].text.replace(/\n/g, ' ') : '');
        }
      }
      return out;
    }, lines);
    process.stdout.write(best.map((text) => `${text}\n`).join(''));
    process.stderr.write(`chromium peak RSS MB ${(await chromiumPeakKiB()) / 1024}\n`);
    if (errors.length) throw new Error(errors.join('; '));
  } else {
    await report(page, errors);
  }
} finally {
  await browser.close();
}

/** The JSON report of the page (fixture, bench, typing, status, table, screenshot). */
async function report(page, errors) {
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
}

/** The largest peak RSS (VmHWM, KiB) among this machine's Chromium processes. */
async function chromiumPeakKiB() {
  let peak = 0;
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    try {
      const command = (await readFile(`/proc/${pid}/cmdline`, 'latin1')).split('\0')[0];
      if (!command.includes('chromium')) continue;
      const match = (await readFile(`/proc/${pid}/status`, 'latin1')).match(/VmHWM:\s+(\d+)/);
      if (match) peak = Math.max(peak, Number(match[1]));
    } catch {
      // the process ended meanwhile
    }
  }
  return peak;
}
