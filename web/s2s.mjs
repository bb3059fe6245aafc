// A keras-s2s bundle's one-file translators from JavaScript: the same code runs under
// onnxruntime-node, and under onnxruntime-web in Node.js or in a page. The whole search
// is inside the graphs, so this file only builds the input tensors and reads the outputs.
//
//   import * as ort from 'onnxruntime-node';
//   const translator = await Translator.open(ort, nodeBundle('runs/g2p_small.bundle'));
//   await translator.translate(['keras'], {beamSize: 5, nBest: 3});
//   // -> [[{text: 'K EH1 R AH0 S', score: -0.12}, ...]]

/** Reads a bundle's files from a directory (Node.js). */
export async function nodeBundle(directory) {
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  return {
    name: directory,
    read: (file) => fs.readFile(path.join(directory, file)),
  };
}

/** Reads a bundle's files over HTTP (a page): `base` is the bundle directory's URL. */
export function urlBundle(base) {
  const root = base.endsWith('/') ? base : `${base}/`;
  return {
    name: root,
    read: async (file) => {
      const response = await fetch(root + file);
      if (!response.ok) throw new Error(`${root}${file}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

async function sha256(bytes) {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function scalar(ort, type, value) {
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from([BigInt(value)]), []);
  return new ort.Tensor('float64', Float64Array.from([value]), []);
}

/** The bundle's one-file translators, opened in one onnxruntime binding. */
export class Translator {
  constructor(ort, manifest, sessions, name) {
    this.ort = ort;
    this.manifest = manifest;
    this.sessions = sessions;
    this.name = name;
    this.decode = manifest.decode;
  }

  /**
   * Opens `translator.onnx` (or its INT8 copy) and, for symbol-tokenizer bundles,
   * `translator.text.onnx`, after checking each file's sha256 against the manifest.
   */
  static async open(ort, bundle, {int8 = false, text = true, sessionOptions = {}} = {}) {
    const manifest = JSON.parse(new TextDecoder().decode(await bundle.read('manifest.json')));
    if (manifest.format_version !== 1) {
      throw new Error(`${bundle.name}manifest.json: format_version ${manifest.format_version} is not supported`);
    }
    const variant = int8 ? 'int8' : 'float32';
    const models = (manifest.models || {})[variant];
    if (!models || !models.translator) {
      throw new Error(`${bundle.name}: no ${variant} translator.onnx in this bundle (export it again)`);
    }
    const open = async (file) => {
      const bytes = await bundle.read(file);
      const expected = (manifest.files[file] || {}).sha256;
      if ((await sha256(bytes)) !== expected) {
        throw new Error(`${bundle.name}${file}: sha256 does not match the manifest (damaged or changed)`);
      }
      return ort.InferenceSession.create(bytes, sessionOptions);
    };
    const sessions = {ids: await open(models.translator)};
    const textFile = manifest.models.float32.text_translator;
    // A SentencePiece bundle's text graph needs onnxruntime-extensions, which the npm
    // runtimes cannot load: its translator.onnx is the file for JavaScript.
    const standard = (manifest.text_translator_operators || 'standard') === 'standard';
    if (text && textFile && !int8 && standard) sessions.text = await open(textFile);
    return new Translator(ort, manifest, sessions, bundle.name);
  }

  get hasText() {
    return Boolean(this.sessions.text);
  }

  _settings({beamSize, nBest = 1, lengthPenalty, maxLengthA, maxLengthB} = {}) {
    const beam = beamSize ?? this.decode.beam_size;
    if (nBest > beam) throw new Error(`nBest (${nBest}) must not exceed beamSize (${beam})`);
    return {
      beam_size: scalar(this.ort, 'int64', beam),
      n_best: scalar(this.ort, 'int64', nBest),
      length_penalty: scalar(this.ort, 'float64', lengthPenalty ?? this.decode.length_penalty),
      max_length_a: scalar(this.ort, 'float64', maxLengthA ?? this.decode.max_length_a),
      max_length_b: scalar(this.ort, 'int64', maxLengthB ?? this.decode.max_length_b),
    };
  }

  /** Lines -> per line, its hypotheses best first: `[{text, score}]` (symbol bundles). */
  async translate(texts, options = {}) {
    if (!this.sessions.text) {
      throw new Error(`${this.name}: no translator.text.onnx (SentencePiece bundles): use translateIds`);
    }
    if (texts.length === 0) return [];
    const feeds = {texts: new this.ort.Tensor('string', texts, [texts.length]), ...this._settings(options)};
    const {translations, text_scores: scores} = await this.sessions.text.run(feeds);
    const [batch, nBest] = translations.dims;
    const out = [];
    for (let row = 0; row < batch; row++) {
      const hypotheses = [];
      for (let rank = 0; rank < nBest; rank++) {
        const score = scores.data[row * nBest + rank];
        if (Number.isFinite(score)) hypotheses.push({text: translations.data[row * nBest + rank], score});
      }
      out.push(hypotheses);
    }
    return out;
  }

  /**
   * Source id lists (as the tokenizer gives them, not reversed) -> per source, its
   * hypotheses best first: `[{tokenIds, score, logProb, finished}]`.
   */
  async translateIds(sources, options = {}) {
    if (sources.length === 0) return [];
    const width = Math.max(1, ...sources.map((s) => s.length));
    const ids = new Int32Array(sources.length * width);
    sources.forEach((source, row) => ids.set(source, row * width));
    const feeds = {
      source_ids: new this.ort.Tensor('int32', ids, [sources.length, width]),
      source_lengths: new this.ort.Tensor('int32', Int32Array.from(sources.map((s) => s.length)), [sources.length]),
      ...this._settings(options),
    };
    const out = await this.sessions.ids.run(feeds);
    const [batch, nBest, length] = out.hypotheses.dims;
    const result = [];
    for (let row = 0; row < batch; row++) {
      const hypotheses = [];
      for (let rank = 0; rank < nBest; rank++) {
        const at = row * nBest + rank;
        if (!Number.isFinite(out.scores.data[at])) continue;
        const size = Number(out.hypothesis_lengths.data[at]);
        hypotheses.push({
          tokenIds: Array.from(out.hypotheses.data.subarray(at * length, at * length + size)),
          score: out.scores.data[at],
          logProb: out.log_probs.data[at],
          finished: Boolean(out.finished.data[at]),
        });
      }
      result.push(hypotheses);
    }
    return result;
  }
}

/** Batch-1 latency of `translateIds` over `sources` (after one warm-up call), in ms. */
export async function latency(translator, sources, options = {}) {
  await translator.translateIds([sources[0]], options);
  const times = [];
  for (const source of sources) {
    const started = performance.now();
    await translator.translateIds([source], options);
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.max(0, Math.round((q / 100) * (times.length - 1))))];
  return {p50_ms: at(50), p90_ms: at(90), sentences: times.length};
}
