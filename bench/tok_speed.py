#!/usr/bin/env python3
"""tok_speed.py - fm-chunk's tokenization throughput on English text, on one
core, beside baselines measured in the same run on the same bytes:

  llama: Google's sentencepiece (C++) with a BPE model built from the GGUF's
         own vocabulary and scores (the algorithm llama.cpp's SPM follows);
  bert:  Hugging Face tokenizers (Rust) WordPiece with the GGUF's vocabulary.

Each tool is pinned to CPU 0 (taskset) and run --repeat times; the median
CPU time (user + system, so that other load on the machine does not count)
is reported, with MB/s and the ratio fm / baseline.  The token ids
of fm and the baseline (whole text) are compared, so the two are known to do
the same work.  The baselines are also timed line by line (a batch of lines),
the way they are usually fed; those ids differ slightly (one dummy prefix per
line) and are not compared.

usage: bench/tok_speed.py [--build build] [--mb 16] [--repeat 5]
"""
import argparse, os, platform, statistics, subprocess, sys, time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus(path, mb):
    """English prose: the licence texts of this machine and the bundled stories, repeated."""
    parts = []
    lic = '/usr/share/common-licenses'
    for name in ('GPL-3', 'LGPL-3', 'Apache-2.0', 'GFDL-1.3', 'MPL-2.0', 'Artistic'):
        p = os.path.join(lic, name)
        if os.path.exists(p):
            parts.append(open(p, 'rb').read())
    docs = os.path.join(TOP, 'examples', 'docs')
    for name in sorted(os.listdir(docs)):
        parts.append(open(os.path.join(docs, name), 'rb').read())
    blob = b'\n'.join(parts)
    data = (blob * (mb * 1024 * 1024 // len(blob) + 1))[:mb * 1024 * 1024]
    data = data[:data.rfind(b'\n') + 1]
    open(path, 'wb').write(data)
    return len(data)


def pinned(cmd):
    return (['taskset', '-c', '0'] + cmd) if subprocess.run(
        ['sh', '-c', 'command -v taskset'], capture_output=True).returncode == 0 else cmd


def time_cmd(cmd, repeat):
    """Median CPU time (user + system) of the command: steadier than wall time
    on a shared machine, and the same measure as the baseline's process_time."""
    import resource
    times = []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(pinned(cmd), check=True, stdout=subprocess.DEVNULL)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return statistics.median(times)


def gguf_vocab(path):
    import gguf
    f = gguf.GGUFReader(path).fields
    def arr(k):
        fl = f.get(k)
        return None if fl is None else [fl.parts[i] for i in fl.data]
    toks = [bytes(x).decode('utf-8') for x in arr('tokenizer.ggml.tokens')]
    scores = arr('tokenizer.ggml.scores')
    types = arr('tokenizer.ggml.token_type')
    return (toks, [float(x[0]) for x in scores] if scores else None,
            [int(x[0]) for x in types] if types else None)


BASELINE = r'''
import sys, time, os
kind, model, text, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, os.path.dirname(sys.argv[5]))
from tok_speed import gguf_vocab
toks, scores, types = gguf_vocab(model)
data = open(text, 'rb').read().decode('utf-8')
lines = data.splitlines(keepends=True)
if kind == 'llama':
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.normalizer_spec.name = 'identity'
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for t, s, ty in zip(toks, scores, types):
        p = m.pieces.add(); p.piece = t; p.score = s; p.type = ty
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    enc = lambda: sp.encode(data)
    enc_lines = lambda: sp.encode(lines)
else:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    vocab = {}
    for i, t in enumerate(toks):
        if t.startswith('\u2581'):
            t = t[1:]
        elif not (t.startswith('[') and t.endswith(']')):
            t = '##' + t
        vocab.setdefault(t, i)
    tk = Tokenizer(models.WordPiece(vocab, unk_token='[UNK]', max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=True, lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    enc = lambda: tk.encode(data, add_special_tokens=False).ids
    enc_lines = lambda: tk.encode_batch(lines, add_special_tokens=False)
times = []
for _ in range(repeat):
    t0 = time.process_time(); ids = enc(); times.append(time.process_time() - t0)
times.sort()
line_times = []
for _ in range(repeat):
    t0 = time.process_time(); enc_lines(); line_times.append(time.process_time() - t0)
line_times.sort()
print(times[len(times) // 2], line_times[len(line_times) // 2])
open(sys.argv[6], 'w').write(' '.join(map(str, ids)))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default=os.path.join(TOP, 'build'))
    ap.add_argument('--mb', type=int, default=16)
    ap.add_argument('--repeat', type=int, default=5)
    a = ap.parse_args()
    work = os.path.join(a.build, 'bench')
    os.makedirs(work, exist_ok=True)
    text = os.path.join(work, 'english.txt')
    size = corpus(text, a.mb)
    fm = os.path.join(a.build, 'fm-chunk')
    print(f'# machine: {platform.node()} {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs; text: {size / 1e6:.1f} MB of English; one core (CPU 0); '
          f'median CPU time of {a.repeat} runs')
    print('| tokenizer | fm-chunk --print-tokens MB/s | fm-chunk chunk file MB/s | baseline | '
          'baseline MB/s (whole text) | fm / baseline | same ids | baseline MB/s (line by line) | fm / baseline |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for kind, model, base in (('llama', 'ggml-vocab-llama-spm.gguf', 'sentencepiece'),
                              ('bert', 'ggml-vocab-bert-bge.gguf', 'HF tokenizers')):
        mp = os.path.join(TOP, 'models', model)
        t_tok = time_cmd([fm, '-t', mp, '--print-tokens', text], a.repeat)
        t_chk = time_cmd([fm, '-t', mp, '-o', os.devnull, text], a.repeat)
        fm_ids = subprocess.run([fm, '-t', mp, '--print-tokens', text], check=True,
                                capture_output=True).stdout.split()
        ids_file = os.path.join(work, kind + '.ids')
        r = subprocess.run(pinned([sys.executable, '-c', BASELINE, kind, mp, text, str(a.repeat),
                                   os.path.abspath(__file__), ids_file]),
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f'| {kind} | {size / t_tok / 1e6:.1f} | {size / t_chk / 1e6:.1f} | {base} | '
                  f'not run: {r.stderr.strip().splitlines()[-1]} | | | | |')
            continue
        t_base, t_lines = map(float, r.stdout.split())
        same = open(ids_file).read().split() == [x.decode() for x in fm_ids]
        print(f'| {kind} | {size / t_tok / 1e6:.1f} | {size / t_chk / 1e6:.1f} | {base} | '
              f'{size / t_base / 1e6:.1f} | {t_base / t_tok:.2f}x | {"yes" if same else "no"} | '
              f'{size / t_lines / 1e6:.1f} | {t_lines / t_tok:.2f}x |')


if __name__ == '__main__':
    main()
