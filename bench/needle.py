#!/usr/bin/env python3
"""needle.py - a haystack for retrieval recall: a long generated document
with facts planted at random places, and one question per fact.

The filler is sentences drawn from a fixed vocabulary; each fact ties a
made-up name (syllables never used in the filler) to a made-up value with a
relation ("the vault code of Kelbrin Vostrade is 48213."), and its question
names the person and the relation but not the value.  A retriever passes
when the chunk holding the fact ranks near the top for its question.
Deterministic for a seed.

usage: needle.py gen [--bytes N] [--facts F] [--seed S] DIR
         writes DIR/haystack.txt, DIR/questions.txt (one per line, fact
         order) and DIR/facts.tsv (byte offset and length of each fact)
       needle.py score DIR CHUNKS.jsonl SELECTION
         CHUNKS.jsonl is `fm-chunk --list` of the haystack's chunk file and
         SELECTION the output of `fm-select < DIR/questions.txt`
         (QUERY<TAB>ID<TAB>SCORE lines); prints "found F of N" with the
         mean tokens selected per question, then each
         question whose fact is in none of its selected chunks, exits 1 if
         any is missing
"""
import argparse
import os
import random
import sys

ADJ = ('old quiet small bright heavy gentle narrow distant warm cold green grey early late '
       'busy empty simple careful patient sudden open long').split()
NOUN = ('river garden window market bridge harbour street forest valley tower lantern wagon '
        'orchard kitchen library meadow village road field letter').split()
VERB = ('passed watched crossed followed reached painted opened carried found left visited '
        'noticed cleaned mended described remembered').split()
PLACE = ('the hill', 'the mill', 'the square', 'the station', 'the chapel', 'the docks',
         'the farm', 'the school', 'the inn', 'the well')
TIME = ('In the morning', 'After the rain', 'By evening', 'Once again', 'Later that week',
        'Before dawn', 'At noon', 'Every spring')
RELATIONS = ('vault code', 'locker number', 'favourite colour', 'secret password',
             'boat name', 'lucky number', 'passport number', 'cat name')
SYL = ('kel bri vos tra dun mor zek pla quo rin thal wex yor gan fel bix nuv oth sar lum '
       'dra kip zol vey').split()
COLOURS = ('amber', 'cobalt', 'crimson', 'teal', 'ochre', 'violet', 'saffron', 'indigo')


def filler(rnd):
    s = '%s %s %s %s %s the %s %s near %s.' % (
        rnd.choice(TIME), rnd.choice(('the', 'a')), rnd.choice(ADJ), rnd.choice(NOUN),
        rnd.choice(VERB), rnd.choice(ADJ), rnd.choice(NOUN), rnd.choice(PLACE))
    return s.replace(' a o', ' an o').replace(' a e', ' an e')


def name(rnd, used):
    while True:
        n = ' '.join((''.join(rnd.choice(SYL) for _ in range(2))).capitalize() for _ in range(2))
        if n not in used:
            used.add(n)
            return n


def value(rnd, rel):
    if rel in ('favourite colour',):
        return rnd.choice(COLOURS)
    if rel in ('boat name', 'cat name', 'secret password'):
        return ''.join(rnd.choice(SYL) for _ in range(3))
    return str(rnd.randrange(10000, 99999))


def score(a):
    import json
    facts = [tuple(map(int, l.split())) for l in open(os.path.join(a.dir, 'facts.tsv'))]
    questions = open(os.path.join(a.dir, 'questions.txt')).read().splitlines()
    # The chunks a fact overlaps: any of them in the selection finds it.
    holders = [set() for _ in facts]
    tokens = {}
    for l in open(a.chunks):
        c = json.loads(l)
        tokens[c['id']] = c['n_tokens']
        for i, (off, n) in enumerate(facts):
            if c['offset'] < off + n and off < c['offset'] + c['length']:
                holders[i].add(c['id'])
    picked = [set() for _ in facts]
    for l in open(a.selection):
        q, cid = l.split('\t')[:2]
        picked[int(q)].add(int(cid))
    missing = [i for i in range(len(facts)) if not holders[i] & picked[i]]
    total = sum(tokens.values())
    resident = sum(tokens[c] for p in picked for c in p) / max(1, len(facts))
    print('found %d of %d; resident %.0f of %d tokens (%.2f%%) per question'
          % (len(facts) - len(missing), len(facts), resident, total, 100 * resident / max(1, total)))
    for i in missing:
        print('missing %d: %s (chunks %s)' % (i, questions[i], sorted(holders[i])))
    return 1 if missing else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    g = sub.add_parser('gen')
    g.add_argument('--bytes', type=int, default=800000, help='size of the haystack')
    g.add_argument('--facts', type=int, default=20)
    g.add_argument('--seed', type=int, default=1)
    g.add_argument('dir')
    sc = sub.add_parser('score')
    sc.add_argument('dir')
    sc.add_argument('chunks')
    sc.add_argument('selection')
    a = ap.parse_args()
    if a.cmd == 'score':
        return score(a)
    rnd = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    # Where the facts go: spread over the whole document, in order.
    spots = sorted(rnd.randrange(0, a.bytes) for _ in range(a.facts))
    used, facts, questions = set(), [], []
    for _ in range(a.facts):
        who, rel = name(rnd, used), rnd.choice(RELATIONS)
        facts.append('The %s of %s is %s.' % (rel, who, value(rnd, rel)))
        questions.append('What is the %s of %s?' % (rel, who))
    out, where, size, k, line = [], [], 0, 0, 0
    while size < a.bytes or k < len(facts):
        if k < len(facts) and size >= spots[k]:
            s = facts[k]
            where.append((size, len(s.encode())))
            k += 1
        else:
            s = filler(rnd)
        line += 1
        s += '\n' if line % 6 == 0 else ' '
        out.append(s)
        size += len(s.encode())
    with open(os.path.join(a.dir, 'haystack.txt'), 'w') as f:
        f.write(''.join(out))
    with open(os.path.join(a.dir, 'questions.txt'), 'w') as f:
        f.write(''.join(q + '\n' for q in questions))
    with open(os.path.join(a.dir, 'facts.tsv'), 'w') as f:
        f.write(''.join('%d\t%d\n' % w for w in where))
    return 0


if __name__ == '__main__':
    sys.exit(main())
