// A keras-s2s bundle's one-file translators from JavaScript: the same code runs under
// onnxruntime-node, and under onnxruntime-web in Node.js or in a page. The whole search
// is inside the graphs, so this file only builds the input tensors and reads the outputs.
//
//   import * as ort from 'onnxruntime-node';
//   const translator = await Translator.open(ort, await nodeBundle('runs/g2p_small.bundle'));
//   await translator.translate(['keras'], {beamSize: 5, nBest: 3});
//   // -> [[{text: 'K EH1 R AH0 S', score: -0.12}, ...]]

/** Reads a bundle's files from a directory (Node.js). */
export async function nodeBundle(directory) {
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  return {
    name: directory,
    where: (file) => path.join(directory, file),
    read: (file) => fs.readFile(path.join(directory, file)),
  };
}

/** Reads a bundle's files over HTTP (a page): `base` is the bundle directory's URL. */
export function urlBundle(base) {
  const root = base.endsWith('/') ? base : `${base}/`;
  return {
    name: root,
    where: (file) => root + file,
    read: async (file) => {
      const response = await fetch(root + file);
      if (!response.ok) throw new Error(`${root}${file}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

// onnxruntime's C API takes strings NUL-terminated, so onnxruntime-node and -web would cut
// a line at a NUL. U+FFFF (a noncharacter, in no tokenizer) stands in for it: an unknown
// character, as NUL is to the tokenizer, so the output is Python's.
export const NUL_STAND_IN = '\uFFFF';

/**
 * The lines of a text as s2s-translate reads them, from an (async) iterable of byte chunks:
 * only `\n` ends a line (`\r\n` is one ending), so a bare `\r`, U+2028 or NUL stays inside
 * its line; a byte-order mark on line 1 is dropped; invalid UTF-8 becomes U+FFFD. Yields
 * `[number, text, valid]`, `valid` false where bytes were replaced.
 */
export async function* readLines(chunks) {
  const strict = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true});
  const lenient = new TextDecoder('utf-8', {ignoreBOM: true});
  const decode = (number, parts) => {
    const bytes = parts.length === 1 ? parts[0] : concat(parts);
    let text;
    let valid = true;
    try {
      text = strict.decode(bytes);
    } catch {
      text = lenient.decode(bytes);
      valid = false;
    }
    return [number, number === 1 && text.startsWith('\uFEFF') ? text.slice(1) : text, valid];
  };
  let pending = [];
  let number = 0;
  for await (const chunk of chunks) {
    let start = 0;
    for (let end = chunk.indexOf(10); end !== -1; end = chunk.indexOf(10, start)) {
      const cut = end > start && chunk[end - 1] === 13 ? end - 1 : end;
      pending.push(chunk.subarray(start, cut));
      // A "\r" that ended the previous chunk belongs to this "\r\n" ending.
      if (end === start && pending.length > 1) trimCarriageReturn(pending);
      yield decode(++number, pending);
      pending = [];
      start = end + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.some((part) => part.length)) yield decode(++number, pending); // the last line, without newline
}

function trimCarriageReturn(parts) {
  for (let i = parts.length - 1; i >= 0; i--) {
    if (parts[i].length) {
      if (parts[i][parts[i].length - 1] === 13) parts[i] = parts[i].subarray(0, -1);
      return;
    }
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((size, part) => size + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function sha256(bytes) {
  // Node.js 18 (Debian 12's) has Web Crypto only as node:crypto's webcrypto.
  const subtle = globalThis.crypto?.subtle ?? (await import('node:crypto')).webcrypto.subtle;
  const digest = await subtle.digest('SHA-256', bytes);
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
   * Opens `translator.text.onnx` for symbol-tokenizer bundles, and `translator.onnx` (or
   * its INT8 copy) at the first `translateIds`, after checking each file's sha256 against
   * the manifest now.
   */
  static async open(ort, bundle, {int8 = false, text = true, sessionOptions = {}} = {}) {
    const manifest = JSON.parse(new TextDecoder().decode(await bundle.read('manifest.json')));
    if (manifest.format_version !== 1) {
      throw new Error(`${bundle.where('manifest.json')}: format_version ${manifest.format_version} is not supported`);
    }
    const variant = int8 ? 'int8' : 'float32';
    const models = (manifest.models || {})[variant];
    if (!models || !models.translator) {
      throw new Error(`${bundle.name}: no ${variant} translator.onnx in this bundle (export it again)`);
    }
    const verified = async (file) => {
      const bytes = await bundle.read(file);
      const expected = (manifest.files[file] || {}).sha256;
      if ((await sha256(bytes)) !== expected) {
        throw new Error(`${bundle.where(file)}: sha256 does not match the manifest (damaged or changed)`);
      }
      return bytes;
    };
    const idsBytes = await verified(models.translator);
    let ids;
    const sessions = {ids: () => (ids ??= ort.InferenceSession.create(idsBytes, sessionOptions))};
    const textFile = manifest.models.float32.text_translator;
    // A SentencePiece bundle's text graph needs onnxruntime-extensions, which the npm
    // runtimes cannot load: its translator.onnx is the file for JavaScript.
    const standard = (manifest.text_translator_operators || 'standard') === 'standard';
    if (text && textFile && !int8 && standard) {
      sessions.text = await ort.InferenceSession.create(await verified(textFile), sessionOptions);
    }
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

  /**
   * Lines -> per line, its hypotheses best first: `[{text, score}]` (symbol bundles). A
   * line longer than the model's source limit is translated cut to the limit, and its
   * list has `truncated: true`. Each line is one line: a `\n` in it is a character.
   */
  async translate(texts, options = {}) {
    if (!this.sessions.text) {
      throw new Error(`${this.name}: no translator.text.onnx (SentencePiece bundles): use translateIds`);
    }
    if (texts.length === 0) return [];
    const lines = texts.map((text) => text.replaceAll('\0', NUL_STAND_IN));
    const feeds = {texts: new this.ort.Tensor('string', lines, [lines.length]), ...this._settings(options)};
    const out = await this.sessions.text.run(feeds);
    const {translations, text_scores: scores} = out;
    const [batch, nBest] = translations.dims;
    const result = [];
    for (let row = 0; row < batch; row++) {
      const hypotheses = [];
      for (let rank = 0; rank < nBest; rank++) {
        const score = scores.data[row * nBest + rank];
        if (Number.isFinite(score)) hypotheses.push({text: translations.data[row * nBest + rank], score});
      }
      // Bundles exported before the text graph reported truncation have no such output.
      hypotheses.truncated = Boolean(out.truncated && out.truncated.data[row]);
      result.push(hypotheses);
    }
    return result;
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
    const out = await (await this.sessions.ids()).run(feeds);
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
