// node bench/web_latency.mjs node|wasm BUNDLE SOURCES.json: batch-1 latency of the bundle's
// translator.onnx, one thread, and the time of one decoder_step.onnx call at batch 1 x beam
// rows alone (where the time goes); prints
// `{"p50_ms", "p90_ms", "sentences", "step_ms"}`.
import {readFile} from 'node:fs/promises';
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';

const web = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'web');
const require = createRequire(path.join(web, 'package.json'));
const [backend, bundleDir, fixturePath] = process.argv.slice(2);
const ort = await import(pathToFileURL(require.resolve(backend === 'wasm' ? 'onnxruntime-web' : 'onnxruntime-node')));
const sessionOptions = {};
if (backend === 'wasm') ort.env.wasm.numThreads = 1;
else Object.assign(sessionOptions, {intraOpNumThreads: 1, interOpNumThreads: 1});
const {Translator, nodeBundle, latency} = await import(pathToFileURL(path.join(web, 's2s.mjs')));
const {sources, beamSize} = JSON.parse(await readFile(fixturePath, 'utf-8'));
const translator = await Translator.open(ort, await nodeBundle(bundleDir), {text: false, sessionOptions});
const result = await latency(translator, sources, {beamSize});

// One decoder step at `beamSize` rows, on its own.
const step = await ort.InferenceSession.create(await readFile(path.join(bundleDir, 'decoder_step.onnx')),
                                               sessionOptions);
const model = translator.manifest.config.model;
const rows = beamSize;
const hidden = model.hidden_dim;
const time = 20;
const feeds = {
  token_ids: new ort.Tensor('int32', new Int32Array(rows).fill(2), [rows]),
  states: new ort.Tensor('float32', new Float32Array(2 * model.num_layers * rows * hidden).fill(0.01),
                         [2 * model.num_layers, rows, hidden]),
  top_k: new ort.Tensor('int64', BigInt64Array.from([BigInt(2 * beamSize)]), [1]),
};
if (step.inputNames.includes('encoder_outputs')) {
  feeds.encoder_outputs = new ort.Tensor('float32', new Float32Array(rows * time * hidden).fill(0.01),
                                         [rows, time, hidden]);
  feeds.source_lengths = new ort.Tensor('int32', new Int32Array(rows).fill(time), [rows]);
}
const fetches = ['top_log_probs', 'top_ids', 'next_states'];
for (let i = 0; i < 10; i++) await step.run(feeds, fetches);
const times = [];
for (let i = 0; i < 100; i++) {
  const started = performance.now();
  await step.run(feeds, fetches);
  times.push(performance.now() - started);
}
times.sort((a, b) => a - b);
result.step_ms = times[50];
process.stdout.write(JSON.stringify(result) + '\n');
