#!/usr/bin/env node
// node web/translate.mjs BUNDLE [options] < lines: one output line per input line, in order,
// like s2s-translate, with the bundle's one-file translator under onnxruntime-node (or
// onnxruntime-web's wasm backend with --backend wasm).

import {createInterface} from 'node:readline';
import {parseArgs} from 'node:util';
import {createReadStream} from 'node:fs';

import {Translator, nodeBundle} from './s2s.mjs';

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

async function flush(lines, first) {
  const results = useIds
    ? await translator.translateIds(lines.map((line, i) => parseIds(line, first + i)), options)
    : await translator.translate(lines, options);
  process.stdout.write(results.map(format).join('\n') + '\n');
}

const input = args.input ? createReadStream(args.input) : process.stdin;
input.on('error', (error) => fail(`cannot read ${args.input}: ${error.message}`));
const reader = createInterface({input, crlfDelay: Infinity});
let batch = [];
let number = 0;
let first = 1;
try {
  for await (const raw of reader) {
    number += 1;
    const line = number === 1 ? raw.replace(/^\uFEFF/, '') : raw;
    if (line.includes('\uFFFD')) process.stderr.write(`translate.mjs: warning: line ${number}: contains U+FFFD\n`);
    batch.push(line);
    if (batch.length === batchSize) {
      await flush(batch, first);
      first = number + 1;
      batch = [];
    }
  }
  if (batch.length) await flush(batch, first);
} catch (error) {
  fail(error.message);
}
