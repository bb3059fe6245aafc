// node bench/web_latency.mjs node|wasm BUNDLE SOURCES.json: batch-1 latency of the bundle's
// translator.onnx, one thread; prints `{"p50_ms", "p90_ms", "sentences"}`.
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
process.stdout.write(JSON.stringify(await latency(translator, sources, {beamSize})) + '\n');
