// node tests/web/run_fixture.mjs node|wasm BUNDLE FIXTURE.json: the bundle's one-file
// translators on a fixture, under onnxruntime-node or onnxruntime-web's wasm backend;
// prints `{"text": [...], "ids": [...]}`, one entry per setting.
import {readFile} from 'node:fs/promises';
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';

const web = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');
const require = createRequire(path.join(web, 'package.json'));
const [backend, bundleDir, fixturePath] = process.argv.slice(2);
const ort = await import(pathToFileURL(require.resolve(backend === 'wasm' ? 'onnxruntime-web' : 'onnxruntime-node')));
if (backend === 'wasm') ort.env.wasm.numThreads = 1;
const {Translator, nodeBundle} = await import(pathToFileURL(path.join(web, 's2s.mjs')));
const fixture = JSON.parse(await readFile(fixturePath, 'utf-8'));
const translator = await Translator.open(ort, await nodeBundle(bundleDir));
const out = {text: [], ids: []};
for (const setting of fixture.settings) {
  out.text.push(await translator.translate(fixture.texts, setting));
  out.ids.push(await translator.translateIds(fixture.sources, setting));
}
process.stdout.write(JSON.stringify(out) + '\n');
