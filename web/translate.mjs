#!/usr/bin/env node
// node web/translate.mjs BUNDLE [options] < lines: one output line per input line, in order,
// like s2s-translate, with the bundle's one-file translator under onnxruntime-node (or
// onnxruntime-web's wasm backend with --backend wasm).

import {parseArgs} from 'node:util';
import {createReadStream} from 'node:fs';

import {Translator, nodeBundle, readLines} from './s2s.mjs';

const usage = `usage: node web/translate.mjs BUNDLE [-i FILE] [--beam N] [--n-best N] [--batch-size N]
                                  [--json] [--ids] [--int8] [--backend node|wasm] [--threads N]

Reads lines (stdin, or -i FILE) and writes one line per input line, in order.
Symbol-tokenizer bundles translate text (translator.text.onnx); with --ids, or for
SentencePiece bundles, each line is space-separated source ids and the output is ids.`;

function fail(message) {
  process.stderr.write(`translate.mjs: error: ${message}\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      input: {type: 'string', short: 'i'},
      beam: {type: 'string'},
      'n-best': {type: 'string', default: '1'},
      'batch-size': {type: 'string', default: '32'},
      json: {type: 'boolean', default: false},
      ids: {type: 'boolean', default: false},
      int8: {type: 'boolean', default: false},
      backend: {type: 'string', default: 'node'},
      threads: {type: 'string'},
      help: {type: 'boolean', short: 'h', default: false},
    },
  });
} catch (error) {
  fail(`${error.message}\n${usage}`);
}
const {values: args, positionals} = parsed;
if (args.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
if (positionals.length !== 1) fail(`one BUNDLE directory expected\n${usage}`);

function positiveInteger(name, text) {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) fail(`--${name} ${text}: a positive integer expected`);
  return value;
}

const options = {nBest: positiveInteger('n-best', args['n-best'])};
if (args.beam !== undefined) options.beamSize = positiveInteger('beam', args.beam);
const batchSize = positiveInteger('batch-size', args['batch-size']);
if (!['node', 'wasm'].includes(args.backend)) fail(`--backend ${args.backend}: use node or wasm`);

const ort = args.backend === 'wasm' ? await import('onnxruntime-web') : await import('onnxruntime-node');
const sessionOptions = {};
if (args.threads !== undefined) {
  const threads = positiveInteger('threads', args.threads);
  if (args.backend === 'wasm') ort.env.wasm.numThreads = threads;
  else sessionOptions.intraOpNumThreads = threads;
} else if (args.backend === 'wasm') {
  ort.env.wasm.numThreads = 1;
}

let translator;
try {
  translator = await Translator.open(ort, await nodeBundle(positionals[0]), {int8: args.int8, sessionOptions});
} catch (error) {
  fail(error.message);
}
const useIds = args.ids || !translator.hasText;
if (useIds && !args.ids) {
  process.stderr.write('translate.mjs: this bundle has no text translator (SentencePiece); reading source ids\n');
}
if (options.nBest > (options.beamSize ?? translator.decode.beam_size)) {
  fail(`--n-best ${options.nBest} must not exceed the beam (${options.beamSize ?? translator.decode.beam_size})`);
}

function parseIds(line, number) {
  const pieces = line.trim() === '' ? [] : line.trim().split(/\s+/);
  return pieces.map((piece) => {
    const id = Number(piece);
    if (!Number.isInteger(id) || id < 0) throw new Error(`line ${number}: ${JSON.stringify(piece)} is not a token id`);
    return id;
  });
}

function format(hypotheses) {
  if (useIds) {
    if (args.json) return JSON.stringify(hypotheses.map((h) => ({token_ids: h.tokenIds, score: h.score})));
    return hypotheses.length ? hypotheses[0].tokenIds.join(' ') : '';
  }
  if (args.json) return JSON.stringify(hypotheses.map((h) => ({text: h.text, score: h.score})));
  return hypotheses.length ? hypotheses[0].text.replace(/\n/g, ' ') : '';
}

let invalid = 0;
let truncated = 0;
let failed = 0;
const MAX_WARNINGS = 10; // per kind, as s2s-translate; the rest are counted at the end

function warn(message) {
  process.stderr.write(`translate.mjs: warning: ${message}\n`);
}

async function run(lines, numbers) {
  if (useIds) return translator.translateIds(lines.map((line, i) => parseIds(line, numbers[i])), options);
  const results = await translator.translate(lines, options);
  results.forEach((hypotheses, i) => {
    if (hypotheses.truncated && ++truncated <= MAX_WARNINGS) {
      warn(`line ${numbers[i]}: more than ${translator.manifest.max_source_length} tokens, truncated to the model's limit`);
    }
  });
  return results;
}

// A batch that fails is translated line by line: a line that cannot be translated gets an
// empty output line and a warning, and the others are written as usual.
async function flush(lines, numbers) {
  let results;
  try {
    results = await run(lines, numbers);
  } catch {
    results = [];
    for (let i = 0; i < lines.length; i++) {
      try {
        results.push(...(await run([lines[i]], [numbers[i]])));
      } catch (error) {
        failed += 1;
        warn(`line ${numbers[i]}: not translated (${error.message}); writing an empty line`);
        results.push([]);
      }
    }
  }
  process.stdout.write(results.map(format).join('\n') + '\n');
}

const input = args.input ? createReadStream(args.input) : process.stdin;
let lines = [];
let numbers = [];
try {
  for await (const [number, line, valid] of readLines(input)) {
    if (!valid && ++invalid <= MAX_WARNINGS) warn(`line ${number}: invalid UTF-8 replaced by U+FFFD`);
    lines.push(line);
    numbers.push(number);
    if (lines.length === batchSize) {
      await flush(lines, numbers);
      lines = [];
      numbers = [];
    }
  }
  if (lines.length) await flush(lines, numbers);
} catch (error) {
  fail(args.input && error.syscall ? `cannot read ${args.input}: ${error.message}` : error.message);
}
if (invalid) warn(`invalid UTF-8 replaced on ${invalid} line(s)`);
if (truncated) warn(`${truncated} line(s) longer than the model's limit were truncated`);
if (failed) process.stderr.write(`translate.mjs: error: ${failed} line(s) not translated (empty lines written)\n`);
// onnxruntime-web keeps the event loop alive for a second after the last call; every line
// is written by now (writes to files and pipes are synchronous in Node.js on Linux).
process.exit(failed ? 1 : 0);
