// The demo page: a bundle's text translator under onnxruntime-web, translating as you type.
// The bundle is `?bundle=URL` (default: the g2p_small bundle of `make demo`, served from
// the repository root with `python -m http.server -b 127.0.0.1`).
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import {Translator, urlBundle} from './s2s.mjs';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
// Threads need a cross-origin-isolated page, which a plain static server does not give.
ort.env.wasm.numThreads = 1;

const params = new URLSearchParams(location.search);
const bundleUrl = new URL(params.get('bundle') || '../runs/g2p_small.bundle/', location.href).href;
const $ = (id) => document.getElementById(id);
$('bundle-name').textContent = params.get('bundle') || '../runs/g2p_small.bundle/';

let translator;
let pending = 0;

async function update() {
  if (!translator) return;
  const ticket = ++pending;
  const text = $('text').value;
  const beamSize = Number($('beam').value);
  const nBest = Math.min(Number($('n-best').value), beamSize);
  const started = performance.now();
  const [hypotheses] = await translator.translate([text], {beamSize, nBest});
  const milliseconds = performance.now() - started;
  if (ticket !== pending) return; // a newer keystroke is on its way
  const rows = hypotheses.map((h, rank) => {
    const row = document.createElement('tr');
    for (const [value, cls] of [[rank + 1, 'rank'], [h.text, 'output'], [h.score.toFixed(3), 'score']]) {
      const cell = document.createElement('td');
      cell.className = cls;
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  });
  $('results').tBodies[0].replaceChildren(...rows);
  $('status').textContent = `${milliseconds.toFixed(1)} ms for beam ${beamSize}, ${nBest}-best ` +
    '(onnxruntime-web, WebAssembly, 1 thread)';
  document.body.dataset.translated = String(Number(document.body.dataset.translated || 0) + 1);
}

try {
  translator = await Translator.open(ort, urlBundle(bundleUrl));
  window.s2sTranslator = translator; // for tests and the console
  document.body.dataset.ready = 'true';
  if (!translator.hasText) {
    $('text').disabled = true;
    $('status').textContent = 'This bundle has no translator.text.onnx (SentencePiece): ' +
      'window.s2sTranslator.translateIds(ids) runs translator.onnx.';
    throw new Error('no text translator');
  }
  for (const id of ['text', 'beam', 'n-best']) $(id).addEventListener('input', update);
  $('form').addEventListener('submit', (event) => event.preventDefault());
  await update();
} catch (error) {
  if (!translator) {
    $('status').textContent = `cannot load ${bundleUrl}: ${error.message}`;
    document.body.dataset.ready = 'error';
    throw error;
  }
}
