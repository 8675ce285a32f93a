#!/usr/bin/env python3
"""lsa-fidelity.py - how close Lookahead Sparse Attention stays to dense
attention on the real stories260K model over long documents.

For each document (a hand-written story the question is about, then
stories the model writes itself; see lsa_longdoc.py), for budgets of 5,
10, 20 and 50 % of the document and re-selection intervals tau of 16 and 64
tokens, fm-decode runs with the resident set chosen by the memory indexer
(--select-by index) and by the two baselines at the same budget, recency
only (recent) and at random (random).  Each run is greedy and teacher
forced: --audit-dense runs the dense model alongside and its token drives
both, so every step compares the two next-token distributions on the same
prefix (top-1 agreement, mean KL(dense || LSA)); --audit-attention gives
the share of the dense attention mass over the document that falls on the
resident chunks (recall).  A budget of 100 % with the indexer is run once
per document as a check: it must give exactly the dense model.  The
default sizes are 1850 tokens, so that document, question and 128 new
tokens stay within the context stories260K.gguf declares (2048), and 4000,
past it.

Writes OUT/lsa-fidelity.md (machine, command, documents, tables of the
means over the documents, every run) and OUT/lsa-fidelity.png (top-1, KL
and recall against the budget, one line per selector and tau); without
matplotlib only the table, with a note.  Run from the repository root after
`make`; set OPENBLAS_CORETYPE where OpenBLAS misdetects the CPU.

usage: lsa-fidelity.py [--build DIR] [--model GGUF] [--out DIR] [--work DIR]
                       [--sizes N,...] [--docs N] [-n TOKENS]
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lsa_longdoc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = (5, 10, 20, 50)
INTERVALS = (16, 64)
SELECTORS = ('index', 'recent', 'random')
TOOLS = ('fm-chunk', 'fm-embed', 'fm-index', 'fm-decode')
CHUNK_TOKENS = 32
PAGE_CHUNKS = 4

# The lead story of each document and a prompt about it; its names occur
# nowhere else in the document.
CASES = (
    ('examples/docs/lighthouse.txt',
     'One evening Tomas climbed the steps of the lighthouse, and Pip the cat'),
    ('examples/docs/clockmaker.txt',
     'Mr. Abel gave Ben a tray for the pieces of the clock, and Ben'),
    ('examples/docs/garden.txt',
     'Lily and Sam planted sunflower seeds under the bridge, and'),
)


def log(msg):
    print('lsa-fidelity: ' + msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit('lsa-fidelity: %s: exit %d\n%s' % (shlex.join(cmd), p.returncode, p.stderr))
    return p


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return os.cpu_count(), model


def tree_state():
    """HEAD and whether the sources of the tools differ from it."""
    try:
        head = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', ROOT, 'status', '--porcelain', '--', 'common',
                                'tools', 'kernels', 'Makefile'],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return head + (' with uncommitted changes in the sources' if dirty else '')


def prepare(bin_dir, model, work, i, size, lead, seed):
    """Document i of this size: text, chunk file, embeddings, index."""
    base = os.path.join(work, 'doc%d-%d' % (size, i))
    n, seeds = lsa_longdoc.make_doc(bin_dir, model, lead, base + '.txt', size, seed)
    tool = lambda t: os.path.join(bin_dir, t)  # noqa: E731
    run([tool('fm-chunk'), '-t', model, '-n', str(CHUNK_TOKENS), '--page-chunks',
         str(PAGE_CHUNKS), '-o', base + '.fmc', base + '.txt'])
    run([tool('fm-embed'), '-o', base + '.fme', base + '.fmc'])
    run([tool('fm-index'), '-c', base + '.fmc', '-o', base + '.fmi', base + '.fme'])
    return {'base': base, 'tokens': n, 'seeds': seeds}


def decode(bin_dir, model, doc, question, budget, tau, by, seed, n_new, work):
    """One audited LSA run; returns its statistics and the printed text."""
    stats = os.path.join(work, 'stats.json')
    cmd = [os.path.join(bin_dir, 'fm-decode'), '-m', model, '--device', 'cpu', '--temp', '0',
           '-n', str(n_new), '-c', doc['base'] + '.fmc', '-i', doc['base'] + '.fmi',
           '-p', question, '--budget', '%d%%' % budget, '--interval', str(tau),
           '--select-by', by, '--seed', str(seed), '--audit-dense', '--audit-attention',
           '--stats-json', stats]
    t0 = time.monotonic()
    p = run(cmd)
    with open(stats) as f:
        st = json.load(f)
    st['seconds'] = time.monotonic() - t0
    st['past_trained'] = "exceeds the model's trained length" in p.stderr
    return st, p.stdout


def mean(xs):
    return sum(xs) / len(xs) if xs else float('nan')


def aggregate(rows, size):
    """{(budget, tau, selector): means over the documents of this size}."""
    out = {}
    for b in BUDGETS:
        for t in INTERVALS:
            for s in SELECTORS:
                r = [x for x in rows if (x['size'], x['budget'], x['tau'], x['by']) ==
                     (size, b, t, s)]
                out[b, t, s] = {k: mean([x[k] for x in r]) for k in
                                ('top1', 'kl', 'recall', 'kv_ratio', 'resident')}
    return out


def table(agg):
    head = ['budget', 'τ']
    for s in SELECTORS:
        head += ['%s top-1' % s, '%s KL' % s, '%s recall' % s]
    head += ['decode KV ratio']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for b in BUDGETS:
        for t in INTERVALS:
            cells = ['%d %%' % b, str(t)]
            for s in SELECTORS:
                a = agg[b, t, s]
                cells += ['%.3f' % a['top1'], '%.3f' % a['kl'], '%.3f' % a['recall']]
            cells.append('%.3f' % agg[b, t, 'index']['kv_ratio'])
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(rows, sizes, n_docs, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    metrics = (('top1', 'top-1 agreement with dense'), ('kl', 'mean KL(dense || LSA), nats'),
               ('recall', 'attention-mass recall'))
    colours = {'index': 'tab:blue', 'recent': 'tab:orange', 'random': 'tab:green'}
    styles = {16: '-', 64: '--'}
    fig, axes = plt.subplots(len(sizes), len(metrics), figsize=(13, 3.6 * len(sizes)),
                             squeeze=False)
    for i, size in enumerate(sizes):
        agg = aggregate(rows, size)
        for j, (m, label) in enumerate(metrics):
            ax = axes[i][j]
            for s in SELECTORS:
                for t in INTERVALS:
                    ax.plot(BUDGETS, [agg[b, t, s][m] for b in BUDGETS], styles[t],
                            color=colours[s], marker='o', label='%s, τ=%d' % (s, t))
            ax.set_xscale('log')
            ax.minorticks_off()
            ax.set_xticks(BUDGETS)
            ax.set_xticklabels(['%d %%' % b for b in BUDGETS])
            ax.set_xlabel('budget (share of the document)')
            ax.set_title('%s\n~%d-token documents' % (label, size), fontsize=10)
            if m != 'kl':
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle('LSA against dense decoding, stories260K, means over %d documents per size'
                 % n_docs, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def report(a, rows, docs, checks, sizes, n_docs, tree, cmdline, started, seconds, plotted):
    n_cpu, cpu = machine()
    md = []
    md.append('# LSA fidelity: sparse against dense decoding on stories260K\n')
    md.append('Machine: %d CPUs (`nproc`), "%s", %s; OPENBLAS_CORETYPE=%s.  Tree: %s.  '
              'Date: %s.  Run time: %.0f s.\n' % (
                  n_cpu, cpu, platform.platform(), os.environ.get('OPENBLAS_CORETYPE', '(unset)'),
                  tree, started, seconds))
    md.append('Command (from the repository root, after `make -j2 CUDA=0`):\n')
    md.append('    ' + cmdline + '\n')
    md.append(
        'Each run: `fm-decode -m %s --device cpu --temp 0 -n %d -c DOC.fmc -i DOC.fmi -p '
        'QUESTION --budget B%% --interval τ --select-by index|recent|random --seed S '
        '--audit-dense --audit-attention --stats-json FILE`.  The document is the context '
        '([BOS] + its tokens + the question), prefill is dense, decode attends to the '
        'resident chunks only (default `--sink 1 --recent 1`), re-chosen every τ generated '
        'tokens.  Teacher forced: the dense model\'s greedy token drives both models, so '
        'every step compares the two next-token distributions on the same prefix.  '
        'top-1: share of steps where the argmax agrees; KL: mean KL(dense || LSA) in nats '
        'over the vocabulary of 512; recall: share of the dense attention mass over the '
        'document that falls on resident chunks, summed over heads and layers, mean over '
        'windows; decode KV ratio: the KV rows held in decode (reserve + BOS + question + '
        'generated) over those of the full cache.  Chunks: `fm-chunk -n %d --page-chunks '
        '%d`; index: `fm-embed` (built-in hashed encoder) and `fm-index`.  The random '
        'baseline is seeded with `--seed` = the document\'s number (1, 2, ...); the seed '
        'has no other effect at `--temp 0`.  Numbers are means over the %d documents of a '
        'size.\n' % (a.model, a.tokens, CHUNK_TOKENS, PAGE_CHUNKS, n_docs))
    md.append('## Documents\n')
    md.append('Each: a hand-written story from examples/docs first (the question is about '
              'it; its names occur nowhere else), then stories stories260K wrote itself '
              '(`fm-decode --temp 1 --seed S -n 400 -p \'Once upon a time\'`, seeds listed) '
              'up to the size, the last one cut short.  "past the trained context": '
              'fm-decode warned that the context (document, question and new tokens) exceeds '
              'the model\'s trained length (llama.context_length).  The excerpt is the start '
              'of the dense model\'s greedy continuation.\n')
    md.append('| size | lead | question | tokens | chunks | story seeds | past the trained '
              'context | dense continuation |')
    md.append('|---|---|---|---|---|---|---|---|')
    for d in docs:
        md.append('| %d | %s | %s | %d | %d | %d..%d | %s | %s |' % (
            d['size'], os.path.basename(d['lead']), d['question'], d['doc_tokens'], d['chunks'],
            d['seeds'][0], d['seeds'][-1], 'yes' if d['past'] else 'no',
            ' '.join(d['continuation'].split())[:90].replace('|', '\\|') + '…'))
    md.append('')
    for size in sizes:
        n_tok = mean([d['doc_tokens'] for d in docs if d['size'] == size])
        md.append('## Documents of ~%d tokens (mean %.0f)\n' % (size, n_tok))
        md.append(table(aggregate(rows, size)))
        md.append('')
    md.append('## Check: budget 100 %, indexer\n')
    md.append('The whole document resident must reproduce dense decoding.\n')
    md.append('| size | lead | slots / chunks | top-1 | KL | recall |')
    md.append('|---|---|---|---|---|---|')
    for c in checks:
        md.append('| %d | %s | %d / %d | %.3f | %.3g | %.3f |' % (
            c['size'], os.path.basename(c['lead']), c['slots'], c['chunks'], c['top1'], c['kl'],
            c['recall']))
    md.append('')
    if plotted:
        md.append('Plot: [lsa-fidelity.png](lsa-fidelity.png) (solid τ=16, dashed τ=64).\n')
    else:
        md.append('No plot: it needs matplotlib (`pip install -r bench/requirements.txt`).\n')
    md.append('## Every run\n')
    md.append('| size | lead | budget | τ | selector | slots | steps | top-1 | KL | recall | '
              'resident fraction | decode KV ratio | s |')
    md.append('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for x in rows:
        md.append('| %d | %s | %d %% | %d | %s | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | '
                  '%.1f |' % (x['size'], os.path.basename(x['lead']), x['budget'], x['tau'],
                              x['by'], x['slots'], x['steps'], x['top1'], x['kl'], x['recall'],
                              x['resident'], x['kv_ratio'], x['seconds']))
    md.append('')
    return '\n'.join(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default='build', help='where the fm tools are (default build)')
    ap.add_argument('--model', default='models/stories260K.gguf')
    ap.add_argument('--out', default='bench/results', help='where the table and plot go')
    ap.add_argument('--work', help='keep the documents and indexes here (default: a temporary '
                    'directory, removed)')
    ap.add_argument('--sizes', default='1850,4000', help='document sizes in tokens')
    ap.add_argument('--docs', type=int, default=len(CASES), help='documents per size, at most %d'
                    % len(CASES))
    ap.add_argument('-n', '--tokens', type=int, default=128, help='tokens generated per run')
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(',')]
    cases = CASES[:max(1, min(a.docs, len(CASES)))]
    env = os.environ.get('OPENBLAS_CORETYPE')
    cmdline = ('OPENBLAS_CORETYPE=%s ' % env if env else '') + \
        shlex.join(['bench/lsa-fidelity.py'] + sys.argv[1:])
    tree = tree_state()
    started = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    t_start = time.monotonic()
    work = a.work or tempfile.mkdtemp(prefix='lsa-fidelity.')
    os.makedirs(work, exist_ok=True)
    # A private copy of the tools: a rebuild during the run cannot mix versions.
    bin_dir = os.path.join(work, 'bin')
    os.makedirs(bin_dir, exist_ok=True)
    for t in TOOLS:
        src = os.path.join(a.build, t)
        if not os.access(src, os.X_OK):
            sys.exit('lsa-fidelity: %s: not found (run make)' % src)
        shutil.copy2(src, os.path.join(bin_dir, t))
    model = os.path.abspath(a.model)

    rows, docs, checks = [], [], []
    for size in sizes:
        for i, (lead, question) in enumerate(cases):
            seed = 1000 * (sizes.index(size) + 1) + 100 * i
            log('document %d of ~%d tokens: %s then stories from seed %d' % (i + 1, size, lead,
                                                                           seed))
            doc = prepare(bin_dir, model, work, i, size, os.path.join(ROOT, lead), seed)
            st, text = decode(bin_dir, model, doc, question, 100, 16, 'index', i + 1, a.tokens,
                              work)
            checks.append({'size': size, 'lead': lead, 'slots': st['slots'],
                           'chunks': st['chunks'], 'top1': st['top1_agreement'],
                           'kl': st['mean_kl'], 'recall': st['attention_recall']})
            docs.append({'size': size, 'lead': lead, 'question': question,
                         'doc_tokens': st['document_tokens'], 'chunks': st['chunks'],
                         'seeds': doc['seeds'] or [seed], 'past': st['past_trained'],
                         'continuation': text[len(question):]})
            for b in BUDGETS:
                for t in INTERVALS:
                    for by in SELECTORS:
                        st, _ = decode(bin_dir, model, doc, question, b, t, by, i + 1, a.tokens,
                                       work)
                        rows.append({'size': size, 'lead': lead, 'budget': b, 'tau': t,
                                     'by': by, 'slots': st['slots'],
                                     'steps': st['decode_tokens'],
                                     'doc_tokens': st['document_tokens'],
                                     'top1': st['top1_agreement'], 'kl': st['mean_kl'],
                                     'recall': st['attention_recall'],
                                     'resident': st['resident_fraction'],
                                     'kv_ratio': st['decode_kv_ratio'],
                                     'seconds': st['seconds']})
                log('  budget %d %%: top-1 %s' % (b, ', '.join(
                    '%s τ=%d %.3f' % (x['by'], x['tau'], x['top1'])
                    for x in rows[-len(INTERVALS) * len(SELECTORS):])))

    os.makedirs(a.out, exist_ok=True)
    png = os.path.join(a.out, 'lsa-fidelity.png')
    plotted = plot(rows, sizes, len(cases), png)
    if not plotted:
        log('no plot: it needs matplotlib (pip install -r bench/requirements.txt)')
    md = report(a, rows, docs, checks, sizes, len(cases), tree, cmdline, started,
                time.monotonic() - t_start, plotted)
    with open(os.path.join(a.out, 'lsa-fidelity.md'), 'w') as f:
        f.write(md)
    log('wrote %s%s' % (os.path.join(a.out, 'lsa-fidelity.md'), ' and ' + png if plotted else ''))
    if not a.work:
        shutil.rmtree(work)


if __name__ == '__main__':
    main()
